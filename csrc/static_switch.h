// Runtime enum value -> compile-time constant, for the host dispatch to the templated kernels.
//
//   CELL_SWITCH(kind, C, [&] { ... recurrent_forward<C, ...>(...) ... });
//   SCALAR_SWITCH(scalar, S, [&] { ... });
//
// The body (the last argument, a lambda taking nothing) is written once and instantiated for
// every value of the enum, with the constant `C` (a CellKind) or `S` (a ScalarKind) declared
// `constexpr` in its scope; the switch returns what the body returns, so every instantiation
// must return the same type. Nesting works (the body of one may use the other). A value outside
// the enum throws std::logic_error: the parsers in recurrent.cpp only produce valid ones.
//
// The idea is BOOL_SWITCH's from Dao-AILab's causal-conv1d; these are written for fastrnn's enums.
// No torch here, so the header also works where only params.h and the standard library are.
#pragma once

#include <stdexcept>
#include <string>

#include "params.h"

// One `case` of a switch: the constant NAME = VALUE, then the body.
#define FASTRNN_SWITCH_CASE(VALUE, NAME, ...) \
  case VALUE: {                               \
    constexpr auto NAME = VALUE;              \
    return __VA_ARGS__();                     \
  }

#define FASTRNN_SWITCH_INVALID(WHAT, VALUE)                                           \
  throw std::logic_error(std::string("fastrnn: invalid ") + (WHAT) + " " +            \
                         std::to_string(static_cast<int>(VALUE)))

// Every CellKind (params.h); cells.cuh's CellOf<C>::type is the cell type of `C`.
#define CELL_SWITCH(KIND, NAME, ...)                                           \
  [&] {                                                                        \
    switch (KIND) {                                                            \
      FASTRNN_SWITCH_CASE(::fastrnn::CellKind::RnnTanh, NAME, __VA_ARGS__)     \
      FASTRNN_SWITCH_CASE(::fastrnn::CellKind::RnnRelu, NAME, __VA_ARGS__)     \
      FASTRNN_SWITCH_CASE(::fastrnn::CellKind::Lstm, NAME, __VA_ARGS__)        \
      FASTRNN_SWITCH_CASE(::fastrnn::CellKind::Gru, NAME, __VA_ARGS__)         \
    }                                                                          \
    FASTRNN_SWITCH_INVALID("CellKind", KIND);                                  \
  }()

// Every ScalarKind (params.h): the dtype of a call.
#define SCALAR_SWITCH(KIND, NAME, ...)                                         \
  [&] {                                                                        \
    switch (KIND) {                                                            \
      FASTRNN_SWITCH_CASE(::fastrnn::ScalarKind::Float32, NAME, __VA_ARGS__)   \
      FASTRNN_SWITCH_CASE(::fastrnn::ScalarKind::Float16, NAME, __VA_ARGS__)   \
      FASTRNN_SWITCH_CASE(::fastrnn::ScalarKind::BFloat16, NAME, __VA_ARGS__)  \
      FASTRNN_SWITCH_CASE(::fastrnn::ScalarKind::Float64, NAME, __VA_ARGS__)   \
    }                                                                          \
    FASTRNN_SWITCH_INVALID("ScalarKind", KIND);                                \
  }()
