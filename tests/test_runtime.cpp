// test_runtime.cpp (not written yet)
#include <doctest/doctest.h>
