// cells.cuh for host C++ (recurrent.cpp): the host reads each cell's gate count G, workspace
// slabs W and kHasC from the same types the kernels are instantiated with, so there is no
// second table to keep in step. The device math comes along but is never called on the host.
#pragma once
// cells.cuh is written for nvcc: it calls expf/tanh without including <cmath> (nvcc declares
// them implicitly) and has `#pragma unroll`, which g++ -Wall reports as unknown; GCC before 13
// cannot silence that warning with `#pragma GCC diagnostic` in C++ (GCC bug 53431). Marking this
// header as a system header also marks the cells.cuh it includes, so its warnings stay quiet
// here; nvcc still compiles cells.cuh with every warning an error (.ci/compile_cuda.sh).
#pragma GCC system_header

#include <cmath>

#include "cells.cuh"
