// test_models.cpp: model-level tests are added by each family in tests/test_<family>.cpp
#include <doctest/doctest.h>
