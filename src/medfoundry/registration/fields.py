"""Displacement fields in torch: conventions, identity grids, warping, composition, smoothing, Jacobians.

Conventions (Learn2Reg):

* On disk and in NumPy a displacement field is ``(H, W, D, 3)`` float32 in **voxels** of the
  fixed image, mapping fixed to moving: the fixed voxel ``x`` corresponds to ``x + u(x)`` in
  the moving image (a pull-back / backward warp).
* In torch every field is ``(N, 3, H, W, D)`` in voxels; channel ``i`` is the displacement
  along spatial axis ``i`` (H, W, D). Images are ``(N, C, H, W, D)``.

All functions here work for any number of spatial dimensions ``S`` (2 or 3): a field is then
``(N, S, *spatial)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RegistrationError

__all__ = [
    "field_to_torch",
    "field_to_numpy",
    "identity_grid",
    "sample_points",
    "warp",
    "compose",
    "resize_field",
    "gaussian_smooth",
    "box_smooth",
    "box_sum",
    "jacobian_determinant",
    "diffusion_penalty",
    "invert",
    "affine_to_field",
]


def field_to_torch(disp: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Learn2Reg ``(H, W, D, 3)`` voxels -> torch ``(1, 3, H, W, D)`` float32 voxels."""
    if disp.ndim < 3 or disp.shape[-1] != disp.ndim - 1:
        raise RegistrationError(
            f"displacement field: expected shape (*spatial, {disp.ndim - 1}) with one component per "
            f"spatial axis, found {tuple(disp.shape)}"
        )
    spatial = disp.ndim - 1
    array = np.ascontiguousarray(np.moveaxis(np.asarray(disp, dtype=np.float32), -1, 0))
    return torch.from_numpy(array).to(device).reshape(1, spatial, *array.shape[1:])


def field_to_numpy(disp: torch.Tensor) -> np.ndarray:
    """Torch ``(1, 3, H, W, D)`` voxels -> Learn2Reg ``(H, W, D, 3)`` float32 voxels."""
    if disp.ndim < 4 or disp.shape[0] != 1 or disp.shape[1] != disp.ndim - 2:
        raise RegistrationError(f"displacement field: expected (1, S, *spatial), found {tuple(disp.shape)}")
    return np.ascontiguousarray(np.moveaxis(disp[0].detach().float().cpu().numpy(), 0, -1))


def identity_grid(shape: tuple[int, ...], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel coordinates ``(1, S, *shape)``: channel ``i`` holds the index along axis ``i``."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0)


def _sample(image: torch.Tensor, coords: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """Sample ``image`` (N, C, *in_shape) at voxel coordinates (N, S, *out_shape) of that image."""
    in_shape = image.shape[2:]
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in in_shape], device=coords.device, dtype=coords.dtype)
    view = (1, len(in_shape)) + (1,) * (coords.ndim - 2)
    grid = (coords * scale.view(view) - 1.0).flip(1).movedim(1, -1)
    return F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)


def sample_points(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Linear interpolation of ``image`` ``(1, C, *spatial)`` at ``P`` points, differentiable in both.

    Args:
        image: one image (or descriptor volume).
        grid: ``(P, S)`` ``grid_sample`` coordinates (``align_corners=True``, last axis first).
        padding_mode: ``border``, ``zeros`` or ``reflection``.

    Returns:
        ``(C, P)``.
    """
    spatial = image.ndim - 2
    count, channels = grid.shape[0], image.shape[1]
    # torch's 3D grid_sample on CPU runs its batch axis in parallel and nothing else, so one image
    # would use one thread: the points go in as one batch entry per thread over a stride-0 view
    # of the image (same arithmetic, same result).
    chunks = torch.get_num_threads() if image.device.type == "cpu" and spatial == 3 else 1
    chunks = max(1, min(chunks, count // 4096))
    if chunks == 1:
        out = F.grid_sample(image, grid.reshape(1, count, *([1] * (spatial - 1)), spatial), mode="bilinear",
                            padding_mode=padding_mode, align_corners=True)
        return out.reshape(channels, count)
    per = -(-count // chunks)
    if per * chunks != count:
        grid = torch.cat([grid, grid[-1:].expand(per * chunks - count, spatial)])
    out = F.grid_sample(image.expand(chunks, *image.shape[1:]), grid.reshape(chunks, per, 1, 1, spatial),
                        mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.reshape(chunks, channels, per).transpose(0, 1).reshape(channels, per * chunks)[:, :count]


def warp(image: torch.Tensor, disp: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "border") -> torch.Tensor:
    """Pull-back warp: ``out(x) = image(x + u(x))``.

    Args:
        image: ``(N, C, *spatial)`` moving image (or features, or a field to compose).
        disp: ``(N, S, *out_spatial)`` displacement in voxels of ``image``; ``out_spatial`` may
            differ from the image's spatial shape only if the caller means it (the identity is
            taken on ``out_spatial``).
        mode: ``bilinear`` (trilinear in 3D) or ``nearest`` (labels).
        padding_mode: ``border``, ``zeros`` or ``reflection`` (outside the image).

    Returns:
        ``(N, C, *out_spatial)``.
    """
    if disp.shape[1] != disp.ndim - 2 or image.ndim != disp.ndim:
        raise RegistrationError(
            f"warp(): image {tuple(image.shape)} and displacement {tuple(disp.shape)} do not match; "
            "expected image (N, C, *spatial) and displacement (N, S, *spatial) with S spatial axes"
        )
    coords = identity_grid(tuple(disp.shape[2:]), disp.device, disp.dtype) + disp
    return _sample(image, coords, mode, padding_mode)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Displacement of ``x -> x + first(x) -> y + second(y)`` (voxels).

    ``first`` maps fixed to an intermediate space and ``second`` intermediate to moving, so the
    result is ``first(x) + second(x + first(x))``.
    """
    return first + warp(second, first, mode="bilinear", padding_mode="border")


def resize_field(disp: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a voxel displacement to ``shape`` and rescale its values to the new voxel size.

    The two grids share their corner voxels (``align_corners=True``), so a voxel displacement is
    multiplied by ``(new - 1) / (old - 1)`` along each axis.
    """
    old = disp.shape[2:]
    if tuple(old) == tuple(shape):
        return disp
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    out = F.interpolate(disp, size=tuple(shape), mode=mode, align_corners=True)
    factors = torch.tensor([(n - 1) / max(o - 1, 1) for n, o in zip(shape, old)], device=disp.device, dtype=disp.dtype)
    return out * factors.view(1, -1, *([1] * len(shape)))


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(tensor: torch.Tensor, sigma: float | tuple[float, ...]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, C, *spatial)`` with ``sigma`` in voxels (replicate borders)."""
    spatial = tensor.ndim - 2
    sigmas = (sigma,) * spatial if isinstance(sigma, (int, float)) else tuple(sigma)
    out = tensor
    channels = tensor.shape[1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    for axis, s in enumerate(sigmas):
        if s <= 0:
            continue
        kernel = _gaussian_kernel(float(s), tensor.device, tensor.dtype)
        radius = kernel.numel() // 2
        shape = [1] * spatial
        shape[axis] = kernel.numel()
        weight = kernel.view(1, 1, *shape).repeat(channels, 1, *([1] * spatial))
        pad = [0, 0] * spatial
        # F.pad orders padding from the last axis backwards.
        pad[2 * (spatial - 1 - axis)] = radius
        pad[2 * (spatial - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def _box_axis_sum(tensor: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """Sum over ``2 * radius + 1`` neighbours along ``dim`` with replicate borders (slices, no pooling)."""
    size = tensor.shape[dim]
    first = tensor.narrow(dim, 0, 1)
    last = tensor.narrow(dim, size - 1, 1)
    padded = torch.cat([first] * radius + [tensor] + [last] * radius, dim=dim)
    # One new tensor, then in-place adds (same order of additions, so the same rounding).
    total = padded.narrow(dim, 0, size) + padded.narrow(dim, 1, size)
    for shift in range(2, 2 * radius + 1):
        total.add_(padded.narrow(dim, shift, size))
    return total


def _box_axis(tensor: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """Mean over ``2 * radius + 1`` neighbours along ``dim`` with replicate borders (slices, no pooling)."""
    return _box_axis_sum(tensor, dim, radius).div_(2 * radius + 1)


def _box_axis_adjoint(grad: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """Adjoint of :func:`_box_axis`: a zero-padded box sum, plus what the replicated borders took."""
    size = grad.shape[dim]
    zeros = grad.new_zeros(grad.shape[:dim] + (radius,) + grad.shape[dim + 1:])
    padded = torch.cat([zeros, grad, zeros], dim=dim)
    total = padded.narrow(dim, 0, size)
    for shift in range(1, 2 * radius + 1):
        total = total + padded.narrow(dim, shift, size)
    # Output i reads the first voxel (2r+1 - count of in-range taps) times; near the far end likewise.
    reach = min(radius, size)
    counts = torch.arange(radius, radius - reach, -1, device=grad.device, dtype=grad.dtype)
    view = [1] * grad.ndim
    view[dim] = reach
    counts = counts.view(view)
    total.narrow(dim, 0, 1).add_((grad.narrow(dim, 0, reach) * counts).sum(dim, keepdim=True))
    total.narrow(dim, size - 1, 1).add_((grad.narrow(dim, size - reach, reach) * counts.flip(dim)).sum(dim, keepdim=True))
    return total / (2 * radius + 1)


class _BoxSmooth(torch.autograd.Function):
    """Repeated separable box filter with an explicit adjoint: autograd through the slices and
    concatenations of :func:`_box_axis` allocates a padded zero tensor per tap, which made the
    backward pass three times the cost of the forward in the fine stage."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, radius: int, passes: int) -> torch.Tensor:
        ctx.radius, ctx.passes = radius, passes
        out = tensor
        for _ in range(passes):
            for dim in range(2, tensor.ndim):
                out = _box_axis(out, dim, radius)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad
        for _ in range(ctx.passes):
            for dim in range(grad.ndim - 1, 1, -1):
                out = _box_axis_adjoint(out, dim, ctx.radius)
        return out, None, None


def box_smooth(tensor: torch.Tensor, radius: int, passes: int = 1) -> torch.Tensor:
    """Repeated separable box (mean) filter of half-width ``radius`` voxels, replicate borders.

    Two passes give a piecewise-quadratic and three a cubic B-spline-like kernel. Written with
    slices and additions, which is several times faster than pooling on CPU, and with an explicit
    adjoint for the backward pass.
    """
    if radius <= 0 or passes <= 0:
        return tensor
    return _BoxSmooth.apply(tensor, int(radius), int(passes))


def box_sum(tensor: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable box sum of half-width ``radius`` voxels over the spatial axes, replicate borders
    (:func:`box_smooth` times ``(2 * radius + 1) ** S``, one pass; no gradient)."""
    if radius <= 0:
        return tensor
    out = tensor
    for dim in range(2, tensor.ndim):
        out = _box_axis_sum(out, dim, int(radius))
    return out


def _gradients(disp: torch.Tensor) -> list[torch.Tensor]:
    """Central differences (one-sided at the borders) of ``disp`` along each spatial axis."""
    grads = []
    for axis in range(disp.ndim - 2):
        dim = axis + 2
        grads.append(torch.gradient(disp, dim=dim)[0])
    return grads


def jacobian_determinant(disp: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``x -> x + u(x)``, ``(N, *spatial)``, unitless.

    ``disp`` is ``(N, S, *spatial)`` in voxels (S = 2 or 3). Values <= 0 mark folding.
    """
    spatial = disp.ndim - 2
    grads = _gradients(disp)  # grads[j][:, i] = d u_i / d x_j
    eye = torch.eye(spatial, device=disp.device, dtype=disp.dtype)
    jac = [[grads[j][:, i] + eye[i, j] for j in range(spatial)] for i in range(spatial)]
    if spatial == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    if spatial == 3:
        return (jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
                - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
                + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]))
    raise RegistrationError(f"jacobian_determinant(): expected 2 or 3 spatial axes, found {spatial}")


def diffusion_penalty(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of ``disp`` over all axes and components (voxels^2)."""
    total = disp.new_zeros(())
    for axis in range(disp.ndim - 2):
        diff = torch.diff(disp, dim=axis + 2)
        total = total + diff.pow(2).mean()
    return total


def invert(disp: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Approximate inverse ``v`` with ``v(y) = -u(y + v(y))`` by fixed-point iteration (voxels).

    Converges for fields without folding whose Jacobian stays away from zero.
    """
    inverse = -disp
    for _ in range(iterations):
        inverse = -warp(disp, inverse)
    return inverse


def affine_to_field(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel-space affine ``(S, S+1)`` (fixed voxel -> moving voxel) as a displacement ``(1, S, *shape)``."""
    spatial = len(shape)
    grid = identity_grid(shape, matrix.device, matrix.dtype)
    flat = grid.reshape(spatial, -1)
    moved = matrix[:, :spatial] @ flat + matrix[:, spatial:]
    return (moved - flat).reshape(1, spatial, *shape)
