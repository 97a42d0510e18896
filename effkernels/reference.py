"""The spec of every effkernels op, in plain PyTorch: readable, slow, exact in float64.

Tests compare every kernel with these functions; nothing else in the package calls them.
"""
import torch
import torch.nn.functional as F


def lowfreq_crop(x, size, out_size=None, *, mean=None, std=None, out_dtype=None):
    """EfficientTrain's low-frequency crop, then antialiased bilinear resize and normalisation.

    Computed in float64 via torch.fft: keep the centred (bh, bw) block of the shifted spectrum,
    invert it at the smaller size, and rescale by bh*bw/(H*W) so the mean intensity is kept.
    """
    bh, bw = (size, size) if isinstance(size, int) else size
    height, width = x.shape[-2:]
    image = x.double() / 255 if x.dtype == torch.uint8 else x.double()
    spectrum = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1))
    top, left = height // 2 - bh // 2, width // 2 - bw // 2
    block = spectrum[..., top : top + bh, left : left + bw]
    y = torch.fft.ifft2(torch.fft.ifftshift(block, dim=(-2, -1))).real * (bh * bw) / (height * width)
    if out_size is not None:
        y = F.interpolate(y, size=tuple(out_size), mode="bilinear", antialias=True, align_corners=False)
    if mean is not None:
        y = y - torch.tensor(mean, dtype=y.dtype, device=y.device)[:, None, None]
    if std is not None:
        y = y / torch.tensor(std, dtype=y.dtype, device=y.device)[:, None, None]
    default_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    return y.to(out_dtype or default_dtype)


def separable_map(x, rows, cols, scale=None, shift=None, out_dtype=None, rank_one=None):
    """`out[n, c] = (Σ_k rows[n, k] @ x[n, c] @ cols[n, k]ᵀ + R[n, c]) * scale[c] + shift[c]`, in float64.

    rank_one = (row_u, row_v, col_u, col_v) adds the term with rows = outer(row_u, row_v) and
    cols = outer(col_u, col_v): `R[n, c] = outer(row_u[n], row_v[n]) @ x[n, c] @ outer(col_u[n], col_v[n])ᵀ`.
    """
    y = torch.einsum("nkoh,nchw,nkvw->ncov", rows.double(), x.double(), cols.double())
    if rank_one is not None:
        row_u, row_v, col_u, col_v = (f.double() for f in rank_one)
        term_rows = row_u[:, :, None] * row_v[:, None, :]
        term_cols = col_u[:, :, None] * col_v[:, None, :]
        y = y + torch.einsum("noh,nchw,nvw->ncov", term_rows, x.double(), term_cols)
    if scale is not None:
        y = y * scale.double()[:, None, None]
    if shift is not None:
        y = y + shift.double()[:, None, None]
    default_dtype = x.dtype if x.dtype.is_floating_point else rows.dtype
    return y.to(out_dtype or default_dtype)


def lowfreq_crop_augmented(x, size, out_size=None, *, boxes, flip, mean=None, std=None, out_dtype=None):
    """Per sample: crop the box, resize it back to (H, W), flip if asked, then `lowfreq_crop`."""
    height, width = x.shape[-2:]
    image = x.double() / 255 if x.dtype == torch.uint8 else x.double()
    samples = []
    for sample, (top, left, box_h, box_w), mirror in zip(image, boxes.tolist(), flip.tolist()):
        crop = sample[None, :, top : top + box_h, left : left + box_w]
        crop = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        samples.append(crop.flip(-1) if mirror else crop)
    default_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    y = lowfreq_crop(torch.cat(samples), size, out_size, mean=mean, std=std)
    return y.to(out_dtype or default_dtype)


def hardswish(t):
    """x·relu6(x + 3)/6, exact in float64 on every device: torch's CUDA kernel multiplies by the
    float32 constant 1.0f/6.0f, 3e-8 off in float64, which would make the spec itself inexact."""
    return t * (t + 3).clamp(0, 6) / 6


ACTIVATIONS = {
    None: lambda t: t,
    "relu": F.relu,
    "hardswish": hardswish,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}


def dwconv_act(h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    """LocalFFN's middle on h = fc1(x): pre_act, then the grid tokens go Seq2Im → depthwise 3×3 conv
    (zero padding 1) + bias → Im2Seq, then act. Prefix tokens skip the conv ("mlp") or become 0 ("skip")."""
    height, width = grid_size
    batch, _, hidden = h.shape
    h = ACTIVATIONS[pre_act](h)
    prefix_h, grid_h = h[:, :num_prefix_tokens], h[:, num_prefix_tokens:]
    image = grid_h.transpose(1, 2).reshape(batch, hidden, height, width)
    image = F.conv2d(image, weight, bias, padding=1, groups=hidden)
    grid_a = ACTIVATIONS[act](image.flatten(2).transpose(1, 2))
    prefix_a = torch.zeros_like(prefix_h) if prefix == "skip" else ACTIVATIONS[act](prefix_h)
    return torch.cat([prefix_a, grid_a], dim=1)


def local_ffn(x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
              *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    """LocalFFN (ViT in 24 h): Linear → dwconv_act → Linear; prefix="skip" tokens get a zero output."""
    h = F.linear(x, fc1_weight, fc1_bias)
    a = dwconv_act(h, grid_size, dw_weight, dw_bias, num_prefix_tokens=num_prefix_tokens, prefix=prefix,
                   pre_act=pre_act, act=act)
    y = F.linear(a[:, num_prefix_tokens:], fc2_weight, fc2_bias)
    prefix_y = F.linear(a[:, :num_prefix_tokens], fc2_weight, fc2_bias)
    if prefix == "skip":
        prefix_y = torch.zeros_like(prefix_y)
    return torch.cat([prefix_y, y], dim=1)


def local_ffn_module(module, x, grid_size=None):
    """What an effkernels.nn.LocalFFN (no norm, no dropout) computes, from its own weights, by the spec."""
    num_prefix, grid = module.token_layout(x.shape[1], grid_size)
    return local_ffn(
        x, grid, module.fc1.weight, module.fc1.bias, module.dwconv.weight, module.dwconv.bias, module.fc2.weight,
        module.fc2.bias, num_prefix_tokens=num_prefix, prefix=module.prefix, pre_act=module.pre_act, act=module.act,
    )
