// test_autodiff.cpp (not written yet)
#include <doctest/doctest.h>
