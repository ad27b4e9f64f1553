"""Atomic operations on int64 words for threads of one job that hand each other work:
``unit_split``'s barrier (a count of arrivals and a generation), the claims and done flags of
the input part's chunks that ``input_pipeline``'s second thread and ``loops.forward_loop``
share. Numba has no atomics of its own; these are LLVM's, emitted through ``@intrinsic``."""
from numba import types
from numba.extending import intrinsic


@intrinsic
def atomic_add(typingctx, array, index, value):
    """array[index] += value atomically (sequentially consistent); returns the old value."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", builder.gep(data, [args[1]]), args[2], "seq_cst")
    return types.int64(array, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index], read with acquire ordering."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)
    return types.int64(array, types.intp), codegen


