"""Law-suite cases for the integer kernels of imported models: resize_linear, ..."""
import hypothesis.strategies as st

from . import Input, OpCase, shapes


@st.composite
def _axis_plan(draw, size: int, bits: int):
    n = draw(st.integers(1, 5))
    index = draw(st.lists(st.integers(0, size - 1), min_size=2 * n, max_size=2 * n))
    weight = draw(st.lists(st.one_of(st.integers(0, 1 << bits), st.sampled_from([0, 1 << bits])),
                           min_size=n, max_size=n))
    return index, weight


@st.composite
def resize_linear(draw):
    shape = draw(shapes(2, 4, 1, 4))
    axes = draw(st.permutations(range(len(shape))))[:2]
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    bits = draw(st.integers(0, 12))
    (ih, wh), (iw, ww) = (draw(_axis_plan(shape[a], bits)) for a in axes)
    precision = draw(st.integers(1, max(1, min(16, 29 - 2 * bits))))   # mostly within p32
    return OpCase([Input(shape, precision)],
                  dict(axes=axes, index_h=ih, weight_h=wh, index_w=iw, weight_w=ww, bits=bits,
                       zero_point=draw(st.integers(-300, 300))))


CASES = {"resize_linear": resize_linear()}


@st.composite
def qsoftmax(draw):
    """Tables as the ONNX importer builds them (onnxruntime's exp table for a drawn input
    scale and row length), rows of 8-bit-like or wider values."""
    from compiler.onnx.softmax import softmax_table
    shape = draw(shapes(1, 3, 1, 3))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    scale = draw(st.sampled_from([0.004, 0.02, 0.0911, 0.5, 1.7, 9.0]))
    mantissa, exponent = softmax_table(scale, shape[axis])
    lo = draw(st.integers(-200, 100))
    return OpCase([Input(shape, draw(st.integers(1, 10)))],
                  dict(axis=axis, mantissa=mantissa, exponent=exponent,
                       numerator=draw(st.sampled_from([1, 127, 254, 255, 256, 1000, 65535])),
                       zero_point=draw(st.integers(-128, 128)), qmin=lo,
                       qmax=lo + draw(st.integers(0, 300))))


CASES["qsoftmax"] = qsoftmax()


@st.composite
def qconv2d_transpose(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    (sh, sw), (dh, dw) = draw(st.tuples(*[st.integers(1, 3)] * 2)), \
        draw(st.tuples(*[st.integers(1, 2)] * 2))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    full = ((h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1)
    begin = [draw(st.integers(0, min(2, f - 1))) for f in full]
    end = [draw(st.integers(-2, max(-2, min(2, f - b - 1)))) for f, b in zip(full, begin)]
    fp32 = draw(st.booleans())
    use_bias = not fp32 and draw(st.booleans())
    inputs = [Input((draw(st.integers(1, 2)), cg * groups, h, w), draw(st.integers(1, 9))),
              Input((cg * groups, mg, kh, kw), draw(st.integers(1, 8)))]
    if use_bias:
        inputs.append(Input((mg * groups,), draw(st.integers(1, 24))))
    attrs = dict(channels=mg * groups, kernel_size=(kh, kw), strides=(sh, sw),
                 dilation=(dh, dw), groups=groups, crop_begin=begin, crop_end=end,
                 use_bias=use_bias, zero_point=draw(st.integers(-300, 300)))
    if fp32:
        attrs.update(deconv_fp32_attrs(draw, mg))
    return OpCase(inputs, attrs)


def _float32(v: float) -> tuple[int, int]:
    from fractions import Fraction

    import numpy as np

    from ops.softfloat import split
    return split(Fraction(float(np.float32(v))))


def deconv_fp32_attrs(draw, mg: int) -> dict:
    """qconv2d_transpose rounding=fp32: float32 scales as an importer writes them (powers of
    two give exact ties; 1e-25 x 1e-15 gives subnormal products)."""
    x_scale = draw(st.sampled_from([0.02, 0.011148386, 0.5, 2.0 ** -7, 1e-25]))
    ws = [_float32(draw(st.sampled_from([0.003, 0.0079, 2.0 ** -9, 1e-15, 0.25])))
          for _ in range(draw(st.sampled_from([1, mg])))]
    lo = draw(st.integers(-200, 100))
    return dict(rounding="fp32", x_scale=_float32(x_scale),
                w_mantissa=[m for m, _ in ws], w_exponent=[e for _, e in ws],
                y_scale=_float32(draw(st.sampled_from([0.017884752, 0.3, 2.0 ** -6, 1.0]))),
                y_zero_point=draw(st.integers(-128, 128)), qmin=lo,
                qmax=lo + draw(st.integers(0, 300)))


CASES["qconv2d_transpose"] = qconv2d_transpose()


@st.composite
def qmatmul(draw):
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    x_lead = tuple(d if draw(st.booleans()) else 1 for d in lead)
    w_lead = tuple(d if draw(st.booleans()) else 1 for d in lead)[draw(st.integers(0, len(lead))):]
    return OpCase([Input(x_lead + (m, k), draw(st.integers(1, 9))),
                   Input(w_lead + (k, n), draw(st.integers(1, 9)))],
                  dict(zero_point=draw(st.integers(-300, 300)),
                       zero_point_b=draw(st.integers(-300, 300))))


CASES["qmatmul"] = qmatmul()


@st.composite
def _rows(draw):
    """A shape, its reduced axes (not all of them, possibly negative) and a precision."""
    shape = draw(shapes(1, 3, 1, 4))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                         unique=True))
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    return shape, axes, draw(st.integers(1, 9))


def _clip_range(draw):
    lo = draw(st.integers(-200, 100))
    return dict(zero_point=draw(st.integers(-128, 128)), qmin=lo,
                qmax=lo + draw(st.integers(0, 300)))


@st.composite
def qvariance(draw):
    shape, axes, p = draw(_rows())
    return OpCase([Input(shape, p)], dict(axes=axes, multiplier=draw(st.integers(0, 1 << 20)),
                                         shift=draw(st.integers(0, 40)), **_clip_range(draw)))


@st.composite
def qnorm(draw):
    shape, axes, p = draw(_rows())
    inputs, extra = [Input(shape, p)], {}
    if draw(st.booleans()):
        kept = tuple(1 if k in [a % len(shape) for a in axes] else d for k, d in enumerate(shape))
        inputs.append(Input(kept, draw(st.integers(1, 9))))
        extra["zero_point_u"] = draw(st.integers(-20, 20))
    else:
        extra["eps"] = draw(st.sampled_from([0, 1, 7, 1000]))
    shift = draw(st.integers(0, 40))
    return OpCase(inputs, dict(axes=axes, numerator=draw(st.integers(1, 1 << 24)), shift=shift,
                               **extra, **_clip_range(draw)))


CASES.update(qvariance=qvariance(), qnorm=qnorm())


@st.composite
def qavg_pool2d(draw):
    """onnxruntime's QLinearAveragePool: scales as float32 (mantissa, exponent) pairs, among
    them one scale for input and output (the tie-prone case of real models)."""
    import numpy as np
    kh, kw = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 3)), draw(st.integers(kw, 3))
    scales = [np.float32(s) for s in (0.40795398, 0.0039215689, 0.02, 1.5)]
    s_x = draw(st.sampled_from(scales))
    s_y = s_x if draw(st.booleans()) else draw(st.sampled_from(scales))
    (mx, ex), (my, ey) = (np.frexp(np.float64(s)) for s in (s_x, s_y))
    lo = draw(st.integers(-128, 0))
    return OpCase([Input((1, draw(st.integers(1, 2)), h, w), draw(st.integers(1, 9)))],
                  dict(pool_size=(kh, kw), strides=(draw(st.integers(1, 3)),) * 2,
                       padding=(draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))),
                       count_include_pad=draw(st.booleans()),
                       zero_point=draw(st.integers(-128, 255)),
                       scale_m=int(mx * (1 << 24)), scale_e=int(ex) - 24,
                       out_m=int(my * (1 << 24)), out_e=int(ey) - 24,
                       zero_point_out=draw(st.integers(-128, 255)), qmin=lo,
                       qmax=lo + draw(st.integers(0, 383))))


CASES["qavg_pool2d"] = qavg_pool2d()
