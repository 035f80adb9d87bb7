"""The allowlist: the TorchScript operations a model artifact may use, as data.

A model is code: every node of every graph in a TorchScript archive is an operation the serving process
runs. Only the pure tensor operations below are allowed (arithmetic, shapes, reductions, linear algebra,
the layers of ``torch.nn``, control flow, lists and strings). Anything else is refused, and the refusal
names the op. An operator adds ops with ``MLOPS_MODEL_OPS_ALLOW`` (comma-separated ``namespace::name``);
:data:`NEVER_ALLOWED` cannot be added: those ops read or write outside the model.

Names are node kinds as ``torch._C.Node.kind()`` reports them (one name covers every overload and the
``out=`` variants). Keep each group sorted; say why when something is left out on purpose.
"""

from __future__ import annotations

import re

#: Control flow, values and object plumbing the TorchScript compiler emits for any model.
STRUCTURE = frozenset({
    "prim::BroadcastSizes", "prim::Constant", "prim::ConstantChunk", "prim::CreateObject", "prim::DictConstruct",
    "prim::EnumName", "prim::EnumValue", "prim::GetAttr", "prim::If", "prim::ListConstruct", "prim::ListUnpack",
    "prim::Loop", "prim::NumToTensor", "prim::RaiseException", "prim::SetAttr", "prim::StringIndex",
    "prim::TupleConstruct", "prim::TupleIndex", "prim::TupleSlice", "prim::TupleUnpack", "prim::Uninitialized",
    "prim::abs", "prim::data", "prim::device", "prim::dtype", "prim::index", "prim::is_cpu", "prim::is_cuda",
    "prim::is_meta", "prim::is_mkldnn", "prim::is_nested", "prim::is_quantized", "prim::is_sparse",
    "prim::isinstance", "prim::itemsize", "prim::layout", "prim::max", "prim::min", "prim::nbytes",
    "prim::rangelist", "prim::requires_grad", "prim::tolist", "prim::type", "prim::unchecked_cast",
    "prim::unchecked_unwrap_optional",
})

#: Python builtins on scalars, lists, dicts and strings as TorchScript compiles them.
BUILTINS = frozenset({
    "aten::Bool", "aten::ComplexImplicit", "aten::Float", "aten::FloatImplicit", "aten::Int", "aten::IntImplicit",
    "aten::ScalarImplicit", "aten::__and__", "aten::__contains__", "aten::__derive_index", "aten::__getitem__",
    "aten::__is__", "aten::__isnot__", "aten::__lshift__", "aten::__not__", "aten::__or__", "aten::__range_length",
    "aten::__round_to_zero_floordiv", "aten::__rshift__", "aten::__xor__", "aten::_set_item", "aten::append",
    "aten::ceil", "aten::clear", "aten::copy", "aten::count", "aten::device", "aten::dict", "aten::divmod",
    "aten::endswith", "aten::extend", "aten::floordiv", "aten::format", "aten::get", "aten::insert",
    "aten::is_grad_enabled", "aten::items", "aten::join", "aten::keys", "aten::len", "aten::list", "aten::lower",
    "aten::pop", "aten::remove", "aten::replace", "aten::reverse", "aten::setdefault", "aten::sort", "aten::sorted",
    "aten::startswith", "aten::str", "aten::strip", "aten::update", "aten::upper", "aten::values",
})

#: Making tensors from nothing but numbers (no ``from_file``, no storage, no ``empty_strided``).
CREATION = frozenset({
    "aten::arange", "aten::as_tensor", "aten::bernoulli", "aten::bernoulli_", "aten::empty", "aten::empty_like",
    "aten::eye", "aten::full", "aten::full_like", "aten::linspace", "aten::logspace", "aten::multinomial",
    "aten::new_empty", "aten::new_full", "aten::new_ones", "aten::new_tensor", "aten::new_zeros", "aten::normal",
    "aten::normal_", "aten::ones", "aten::ones_like", "aten::rand", "aten::rand_like", "aten::randint",
    "aten::randint_like", "aten::randn", "aten::randn_like", "aten::randperm", "aten::scalar_tensor",
    "aten::tensor", "aten::tril_indices", "aten::triu_indices", "aten::uniform_", "aten::zeros",
    "aten::zeros_like",
})

#: Element-wise arithmetic, math, comparison and logic (with their in-place forms).
ELEMENTWISE = frozenset({
    "aten::abs", "aten::abs_", "aten::absolute", "aten::acos", "aten::acosh", "aten::add", "aten::add_",
    "aten::addcdiv", "aten::addcmul", "aten::angle", "aten::asin", "aten::asinh", "aten::atan", "aten::atan2",
    "aten::atanh", "aten::bitwise_and", "aten::bitwise_not", "aten::bitwise_or", "aten::bitwise_xor",
    "aten::ceil_", "aten::clamp", "aten::clamp_", "aten::clamp_max", "aten::clamp_min", "aten::clip",
    "aten::copysign", "aten::cos", "aten::cosh", "aten::deg2rad", "aten::digamma", "aten::div", "aten::div_",
    "aten::divide", "aten::eq", "aten::eq_", "aten::equal", "aten::erf", "aten::erfc", "aten::erfinv",
    "aten::exp", "aten::exp2", "aten::exp_", "aten::expm1", "aten::fill_", "aten::float_power", "aten::floor",
    "aten::floor_", "aten::floor_divide", "aten::fmax", "aten::fmin", "aten::fmod", "aten::frac", "aten::ge",
    "aten::gt", "aten::heaviside", "aten::hypot", "aten::isclose", "aten::allclose", "aten::isfinite",
    "aten::isinf", "aten::isnan", "aten::isneginf", "aten::isposinf", "aten::le", "aten::lerp", "aten::lgamma",
    "aten::log", "aten::log10", "aten::log1p", "aten::log2", "aten::log_", "aten::logaddexp", "aten::logaddexp2",
    "aten::logical_and", "aten::logical_not", "aten::logical_or", "aten::logical_xor", "aten::logit", "aten::lt",
    "aten::masked_fill", "aten::masked_fill_", "aten::maximum", "aten::minimum", "aten::mul", "aten::mul_",
    "aten::multiply", "aten::nan_to_num", "aten::ne", "aten::neg", "aten::neg_", "aten::negative",
    "aten::positive", "aten::pow", "aten::pow_", "aten::rad2deg", "aten::reciprocal", "aten::remainder",
    "aten::round", "aten::rsqrt", "aten::rsub", "aten::sgn", "aten::sigmoid", "aten::sigmoid_", "aten::sign",
    "aten::sin", "aten::sinh", "aten::sqrt", "aten::sqrt_", "aten::square", "aten::sub", "aten::sub_",
    "aten::subtract", "aten::tan", "aten::tanh", "aten::tanh_", "aten::true_divide", "aten::trunc",
    "aten::where", "aten::xlogy", "aten::zero_",
})

#: Sizes, views, joins, splits, indexing and dtype or device changes (no ``set_``, ``as_strided`` or
#: ``resize_``: those reach into storage).
SHAPE = frozenset({
    "aten::atleast_1d", "aten::atleast_2d", "aten::atleast_3d", "aten::broadcast_tensors", "aten::broadcast_to",
    "aten::cartesian_prod", "aten::cat", "aten::channel_shuffle", "aten::chunk", "aten::clone",
    "aten::column_stack", "aten::combinations", "aten::concat", "aten::concatenate", "aten::constant_pad_nd",
    "aten::contiguous", "aten::copy_", "aten::cpu", "aten::detach", "aten::diag", "aten::diag_embed",
    "aten::diagonal", "aten::dim", "aten::dstack", "aten::expand", "aten::expand_as", "aten::flatten",
    "aten::flip", "aten::fliplr", "aten::flipud", "aten::gather", "aten::hstack", "aten::index",
    "aten::index_add", "aten::index_add_", "aten::index_copy", "aten::index_fill", "aten::index_put",
    "aten::index_put_", "aten::index_select", "aten::is_complex", "aten::is_contiguous",
    "aten::is_floating_point", "aten::item", "aten::masked_scatter", "aten::masked_select", "aten::meshgrid",
    "aten::movedim", "aten::moveaxis", "aten::narrow", "aten::nonzero", "aten::numel", "aten::numpy_T",
    "aten::one_hot", "aten::pad", "aten::permute", "aten::pixel_shuffle", "aten::pixel_unshuffle",
    "aten::ravel", "aten::reflection_pad1d", "aten::reflection_pad2d", "aten::repeat", "aten::repeat_interleave",
    "aten::replication_pad1d", "aten::replication_pad2d", "aten::reshape", "aten::reshape_as", "aten::roll",
    "aten::rot90", "aten::scatter", "aten::scatter_", "aten::scatter_add", "aten::scatter_add_",
    "aten::scatter_reduce", "aten::select", "aten::size", "aten::slice", "aten::split", "aten::split_with_sizes",
    "aten::squeeze", "aten::squeeze_", "aten::stack", "aten::swapaxes", "aten::swapdims", "aten::t",
    "aten::take", "aten::take_along_dim", "aten::tensor_split", "aten::tile", "aten::to", "aten::transpose",
    "aten::tril", "aten::triu", "aten::type_as", "aten::unbind", "aten::unflatten", "aten::unfold",
    "aten::unsafe_chunk", "aten::unsafe_split", "aten::unsqueeze", "aten::unsqueeze_", "aten::view",
    "aten::view_as", "aten::vstack",
})

#: Python warnings from scripted code: ``nn.Softmax``, ``nn.InstanceNorm1d``, ``nn.EmbeddingBag`` and
#: ``nn.MultiheadAttention`` compile one in. A warning goes through Python's filters (shown once per
#: message and place by default), so it is allowed; ``print`` is not (see :data:`REFUSED_BY_DEFAULT`).
WARNINGS = frozenset({"aten::warn"})

#: Reductions, sorting and searching.
REDUCTION = frozenset({
    "aten::_unique2", "aten::all", "aten::amax", "aten::amin", "aten::aminmax", "aten::any", "aten::argmax",
    "aten::argmin", "aten::argsort", "aten::bincount", "aten::bucketize", "aten::count_nonzero", "aten::cummax",
    "aten::cummin", "aten::cumprod", "aten::cumsum", "aten::histc", "aten::kthvalue", "aten::logcumsumexp",
    "aten::logsumexp", "aten::max", "aten::mean", "aten::median", "aten::min", "aten::mode", "aten::nanmean",
    "aten::nanmedian", "aten::nanquantile", "aten::nansum", "aten::norm", "aten::prod", "aten::quantile",
    "aten::searchsorted", "aten::std", "aten::std_mean", "aten::sum", "aten::topk", "aten::unique_consecutive",
    "aten::var", "aten::var_mean",
})

#: Matrix products and decompositions.
LINALG = frozenset({
    "aten::addbmm", "aten::addmm", "aten::addmv", "aten::baddbmm", "aten::bmm", "aten::chain_matmul",
    "aten::cross", "aten::det", "aten::dot", "aten::einsum", "aten::ger", "aten::inverse", "aten::kron",
    "aten::linalg_cholesky", "aten::linalg_cross", "aten::linalg_det", "aten::linalg_eigh", "aten::linalg_inv",
    "aten::linalg_matrix_norm", "aten::linalg_multi_dot", "aten::linalg_norm", "aten::linalg_pinv",
    "aten::linalg_qr", "aten::linalg_solve", "aten::linalg_svd", "aten::linalg_vector_norm", "aten::logdet",
    "aten::matmul", "aten::matrix_power", "aten::mm", "aten::mv", "aten::outer", "aten::pinverse",
    "aten::slogdet", "aten::tensordot", "aten::trace", "aten::vdot",
})

#: What the layers and functions of ``torch.nn`` compile to.
NN = frozenset({
    "aten::_cdist_forward", "aten::_convolution", "aten::_euclidean_dist", "aten::_log_softmax",
    "aten::_native_multi_head_attention", "aten::_softmax", "aten::_transformer_encoder_layer_fwd",
    "aten::_upsample_bicubic2d_aa", "aten::_upsample_bilinear2d_aa", "aten::_upsample_lanczos2d_aa",
    "aten::_upsample_nearest_exact1d", "aten::_upsample_nearest_exact2d", "aten::_upsample_nearest_exact3d",
    "aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d",
    "aten::adaptive_max_pool1d", "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d",
    "aten::affine_grid_generator", "aten::alpha_dropout", "aten::alpha_dropout_", "aten::avg_pool1d",
    "aten::avg_pool2d", "aten::avg_pool3d", "aten::batch_norm", "aten::bilinear",
    "aten::binary_cross_entropy", "aten::binary_cross_entropy_with_logits", "aten::cdist", "aten::celu",
    "aten::celu_", "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_transpose1d",
    "aten::conv_transpose2d", "aten::conv_transpose3d", "aten::convolution", "aten::cosine_similarity",
    "aten::cross_entropy_loss", "aten::dropout", "aten::dropout_", "aten::elu", "aten::elu_", "aten::embedding",
    "aten::embedding_bag", "aten::embedding_renorm_", "aten::feature_alpha_dropout", "aten::feature_dropout",
    "aten::gelu", "aten::glu", "aten::grid_sampler", "aten::group_norm", "aten::gru", "aten::gru_cell",
    "aten::hardshrink", "aten::hardsigmoid", "aten::hardsigmoid_", "aten::hardswish", "aten::hardswish_",
    "aten::hardtanh", "aten::hardtanh_", "aten::huber_loss", "aten::instance_norm", "aten::kl_div",
    "aten::l1_loss", "aten::layer_norm", "aten::leaky_relu", "aten::leaky_relu_", "aten::linear",
    "aten::log_sigmoid", "aten::log_softmax", "aten::lstm", "aten::lstm_cell", "aten::max_pool1d",
    "aten::max_pool1d_with_indices", "aten::max_pool2d", "aten::max_pool2d_with_indices", "aten::max_pool3d",
    "aten::mish", "aten::mish_", "aten::mse_loss", "aten::native_batch_norm", "aten::native_layer_norm",
    "aten::nll_loss", "aten::nll_loss_nd", "aten::pairwise_distance", "aten::pdist", "aten::prelu",
    "aten::relu", "aten::relu6", "aten::relu_", "aten::rms_norm", "aten::rnn_relu", "aten::rnn_relu_cell",
    "aten::rnn_tanh", "aten::rnn_tanh_cell", "aten::rrelu", "aten::scaled_dot_product_attention", "aten::selu",
    "aten::selu_", "aten::silu", "aten::silu_", "aten::smooth_l1_loss", "aten::softmax", "aten::softplus",
    "aten::softshrink", "aten::threshold", "aten::threshold_", "aten::upsample_bicubic2d",
    "aten::upsample_bilinear2d", "aten::upsample_linear1d", "aten::upsample_nearest1d",
    "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::upsample_trilinear3d",
})

#: Everything a model may use unless an operator adds more.
PURE_TENSOR_OPS: frozenset[str] = (STRUCTURE | BUILTINS | CREATION | ELEMENTWISE | SHAPE | REDUCTION | LINALG | NN
                                   | WARNINGS)

#: Refused by default though they touch no file: ``print`` (a model must not write into the service's
#: output, once per request), asynchronous tasks, and the process-wide random seed. Add them with
#: ``MLOPS_MODEL_OPS_ALLOW`` if a model needs them.
REFUSED_BY_DEFAULT = frozenset({
    "aten::_print", "aten::manual_seed", "aten::seed", "aten::wait", "prim::Print", "prim::fork",
})

#: Never allowed, whatever the setting says: files and storage (``from_file`` maps any path, shared or not),
#: serialisation, calls into Python, remote calls and calls the inspector cannot follow.
NEVER_ALLOWED = frozenset({
    "aten::_nested_tensor_storage_offsets", "aten::as_strided", "aten::as_strided_", "aten::from_file",
    "aten::record_stream", "aten::resize_", "aten::save", "aten::set_", "aten::set_data", "aten::storage_offset",
    "debugprims::load_tensor", "prim::CallFunction", "prim::CallMethod", "prim::Enter", "prim::Exit",
    "prim::IgnoredPythonOp", "prim::PythonOp", "prim::profile", "prim::profile_ivalue", "prim::rpc_async",
    "prim::rpc_remote", "prim::rpc_sync",
})

#: Whole namespaces that are never allowed: distributed collectives, profiler hooks, symmetric memory.
NEVER_NAMESPACES = frozenset({"_c10d_functional", "_c10d_functional_autograd", "c10d", "profiler", "symm_mem"})

_OP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*::[A-Za-z_][A-Za-z0-9_]*$")


def never_allowed(op: str) -> bool:
    return op in NEVER_ALLOWED or op.split("::", 1)[0] in NEVER_NAMESPACES


def why_refused(op: str, allowed: frozenset[str]) -> str | None:
    """None when ``op`` is allowed, else the reason the refusal gives."""
    if never_allowed(op):
        return "reaches outside the model (files, storage, Python or remote calls); never allowed"
    if op in allowed:
        return None
    if op in REFUSED_BY_DEFAULT:
        return "writes to the service's output or changes process state; refused unless MLOPS_MODEL_OPS_ALLOW adds it"
    return "not on the allowlist of pure tensor operations (MLOPS_MODEL_OPS_ALLOW adds ops)"


def parse_extra_ops(text: str) -> frozenset[str]:
    """``MLOPS_MODEL_OPS_ALLOW``: ops separated by commas or whitespace, each ``namespace::name``.

    Raises ``ValueError`` for a malformed name or one that can never be allowed: a service with a bad
    setting should not start rather than run with a policy nobody meant."""
    ops = {part for part in re.split(r"[,\s]+", text or "") if part}
    for op in sorted(ops):
        if not _OP_NAME.match(op):
            raise ValueError(f"MLOPS_MODEL_OPS_ALLOW: {op!r} is not an op name like 'aten::warn'")
        if never_allowed(op):
            raise ValueError(f"MLOPS_MODEL_OPS_ALLOW: {op} can never be allowed (it reaches outside the model)")
    return frozenset(ops)
