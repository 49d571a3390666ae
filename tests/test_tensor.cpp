// test_tensor.cpp (not written yet)
#include <doctest/doctest.h>
