"""The PyTorch side of the benchmark: the same three models, trained eagerly as a reader would.

Each model has course_lib's layer shapes and its initialisation scheme (Flax's defaults: LeCun
normal kernels, zero biases, orthogonal recurrent kernels, N(0, 1/d) embeddings), the same
optimiser settings and the same loss; ``load_from_jax`` copies a JAX model's weights in, so that
tests can check that both sides compute the same function.

Layout differences are absorbed by the copy, not by extra work in the step: PyTorch convolutions
run NCHW, so the DCGAN's flattened 7x7 features are permuted once in the weights; PyTorch's LSTM
has two biases per layer (b_ih + b_hh), Flax's one, so b_ih is frozen at zero and not trained.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LEAK = 0.3


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Flax's default kernel init: truncated normal (+-2 sd) with variance 1 / fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def init_linear(layer: nn.Linear) -> None:
    lecun_normal_(layer.weight, layer.in_features)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_conv(layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """Fan-in as Flax counts it for a kernel [kh, kw, in, out]: kh * kw * in."""
    cin = layer.in_channels
    lecun_normal_(layer.weight, cin * layer.kernel_size[0] * layer.kernel_size[1])
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


# --- VAE ------------------------------------------------------------------------------------


class VAE(nn.Module):
    """784-400-20 encoder (mean and log-variance heads), 20-400-784 decoder, GELU (tanh form)."""

    def __init__(self, hidden: int = 400, latent: int = 20, pixels: int = 784):
        super().__init__()
        self.enc = nn.Linear(pixels, hidden)
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)
        self.dec = nn.Linear(latent, hidden)
        self.out = nn.Linear(hidden, pixels)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m)

    def loss(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO in nats (Bernoulli decoder), summed over pixels, mean over the batch;
        ``eps`` is the reparameterisation noise (drawn here when None)."""
        h = F.gelu(self.enc(x.flatten(1)), approximate="tanh")
        mean, log_var = self.mean(h), self.log_var(h)
        eps = torch.randn_like(mean) if eps is None else eps
        z = mean + torch.exp(0.5 * log_var) * eps
        logits = self.out(F.gelu(self.dec(z), approximate="tanh"))
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum")
        kl = 0.5 * torch.sum(torch.exp(log_var) + mean**2 - 1.0 - log_var)
        return (recon + kl) / x.shape[0]


def make_vae_step(model: VAE):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, eps=None):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x, eps)
        loss.backward()
        opt.step()
        return loss

    return step


# --- DCGAN ----------------------------------------------------------------------------------


class Generator(nn.Module):
    def __init__(self, latent: int = 100):
        super().__init__()
        self.dense = nn.Linear(latent, 7 * 7 * 256, bias=False)
        self.bn0 = nn.BatchNorm1d(7 * 7 * 256)
        self.up1 = nn.ConvTranspose2d(256, 128, 5, 1, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.up2 = nn.ConvTranspose2d(128, 64, 5, 2, padding=2, output_padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.up3 = nn.ConvTranspose2d(64, 1, 5, 2, padding=2, output_padding=1, bias=False)
        init_linear(self.dense)
        for m in (self.up1, self.up2, self.up3):
            init_conv(m)

    def forward(self, z):
        h = F.leaky_relu(self.bn0(self.dense(z)), LEAK).view(-1, 256, 7, 7)
        h = F.leaky_relu(self.bn1(self.up1(h)), LEAK)
        h = F.leaky_relu(self.bn2(self.up2(h)), LEAK)
        return torch.tanh(self.up3(h))[:, 0]


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 5, 2, padding=2)
        self.conv2 = nn.Conv2d(64, 128, 5, 2, padding=2)
        self.head = nn.Linear(7 * 7 * 128, 1)
        init_conv(self.conv1)
        init_conv(self.conv2)
        init_linear(self.head)

    def forward(self, x):
        h = F.dropout(F.leaky_relu(self.conv1(x[:, None]), LEAK), 0.3, self.training)
        h = F.dropout(F.leaky_relu(self.conv2(h), LEAK), 0.3, self.training)
        return self.head(h.flatten(1))[:, 0]


def make_dcgan_step(g: Generator, d: Discriminator, latent: int = 100):
    """D on real and on detached fakes, then G through the updated D on the same fakes (one G
    forward per step, like course_lib). D's weights need no gradient in G's update, so they are
    switched off there: that makes this baseline faster than the usual PyTorch example."""
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4)
    d_params = list(d.parameters())

    def step(x):
        fake = g(torch.randn(x.shape[0], latent))
        opt_d.zero_grad(set_to_none=True)
        d_loss = F.softplus(-d(x)).mean() + F.softplus(d(fake.detach())).mean()
        d_loss.backward()
        opt_d.step()
        for p in d_params:
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.softplus(-d(fake)).mean()
        g_loss.backward()
        opt_g.step()
        for p in d_params:
            p.requires_grad_(True)
        return d_loss, g_loss

    return step


# --- char-LSTM ------------------------------------------------------------------------------


class CharLM(nn.Module):
    def __init__(self, vocab: int, embed: int = 128, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)
        with torch.no_grad():
            # nnx.Embed: variance_scaling(1, fan_in, normal) with fan_in = embed
            nn.init.normal_(self.embed.weight, 0.0, 1.0 / math.sqrt(embed))
            for k in range(layers):
                w_ih = getattr(self.lstm, f"weight_ih_l{k}")
                w_hh = getattr(self.lstm, f"weight_hh_l{k}")
                lecun_normal_(w_ih, w_ih.shape[1])
                _orthogonal_rows_(w_hh)
                nn.init.zeros_(getattr(self.lstm, f"bias_hh_l{k}"))
                b_ih = getattr(self.lstm, f"bias_ih_l{k}")
                nn.init.zeros_(b_ih)
                b_ih.requires_grad_(False)  # Flax's cell has one bias per layer
        init_linear(self.out)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens))
        return self.out(h)


def _orthogonal_rows_(w_hh: torch.Tensor) -> None:
    """Flax's orthogonal init of the [hidden, 4 * hidden] recurrent kernel; PyTorch stores its
    transpose [4 * hidden, hidden]."""
    kernel = torch.empty(w_hh.shape[1], w_hh.shape[0])
    nn.init.orthogonal_(kernel)
    w_hh.copy_(kernel.T)


def make_lm_step(model: CharLM):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)

    def step(inputs, targets):
        opt.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return loss

    return step


def trainable_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in model.parameters() if p.requires_grad)


# --- weights from the JAX side (tests) ------------------------------------------------------


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def load_vae_from_jax(model: VAE, jvae) -> None:
    """Copy course_lib's MLP VAE (one hidden layer each side) into ``model``."""
    pairs = [
        (model.enc, jvae.encoder.layers[0]),
        (model.mean, jvae.encoder.mean),
        (model.log_var, jvae.encoder.log_var),
        (model.dec, jvae.decoder.layers[0]),
        (model.out, jvae.decoder.out),
    ]
    with torch.no_grad():
        for tl, jl in pairs:
            tl.weight.copy_(_t(jl.kernel[...]).T)
            tl.bias.copy_(_t(jl.bias[...]))


def _hwc_to_chw(h: int, w: int, c: int) -> np.ndarray:
    """Index map: position k of a CHW-flattened vector reads position perm[k] of the HWC one."""
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def load_dcgan_from_jax(g: Generator, d: Discriminator, jg, jd) -> None:
    """Copy the benchmark's JAX G and D (benchmarks.jax_models) into the PyTorch ones."""
    perm = _hwc_to_chw(7, 7, 256)
    with torch.no_grad():
        g.dense.weight.copy_(_t(jg.dense.kernel[...]).T[perm])
        for tb, jb, p in ((g.bn0, jg.bn0, perm), (g.bn1, jg.bn1, None), (g.bn2, jg.bn2, None)):
            idx = slice(None) if p is None else p
            tb.weight.copy_(_t(jb.scale[...])[idx])
            tb.bias.copy_(_t(jb.bias[...])[idx])
        for tc, jc in ((g.up1, jg.up1), (g.up2, jg.up2), (g.up3, jg.up3)):
            # lax.conv_transpose(transpose_kernel=False) correlates the dilated input with the
            # kernel as it is; PyTorch's ConvTranspose2d is the gradient of a convolution, which
            # flips it: weight[in, out, a, b] = kernel[kh - 1 - a, kw - 1 - b, in, out]
            tc.weight.copy_(_t(jc.kernel[...]).flip(0, 1).permute(2, 3, 0, 1))
        for tc, jc in ((d.conv1, jd.conv1), (d.conv2, jd.conv2)):
            tc.weight.copy_(_t(jc.kernel[...]).permute(3, 2, 0, 1))
            tc.bias.copy_(_t(jc.bias[...]))
        d.head.weight.copy_(_t(jd.head.kernel[...]).T[:, _hwc_to_chw(7, 7, 128)])
        d.head.bias.copy_(_t(jd.head.bias[...]))


def load_lm_from_jax(model: CharLM, jlm) -> None:
    with torch.no_grad():
        model.embed.weight.copy_(_t(jlm.embed.embedding[...]))
        for k, layer in enumerate(jlm.layers):
            cell = layer.cell
            getattr(model.lstm, f"weight_ih_l{k}").copy_(_t(cell.dense_i.kernel[...]).T)
            getattr(model.lstm, f"weight_hh_l{k}").copy_(_t(cell.dense_h.kernel[...]).T)
            getattr(model.lstm, f"bias_hh_l{k}").copy_(_t(cell.dense_h.bias[...]))
            getattr(model.lstm, f"bias_ih_l{k}").zero_()
        model.out.weight.copy_(_t(jlm.out.kernel[...]).T)
        model.out.bias.copy_(_t(jlm.out.bias[...]))
