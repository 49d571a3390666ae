// test_errors.cpp (not written yet)
#include <doctest/doctest.h>
