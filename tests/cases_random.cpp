// Random cases live in cases_shape.cpp (dropout) and test_runtime.cpp (generator).
