"""ControlLLLite as Forge ships it (dfdcbab extensions-builtin/sd_forge_controlllite/lib_controllllite/
lib_controllllite.py:5-25, :82-113, :116-236, :262-270), reduced to linear (attention) modules.

An attn1/attn2 patch ``control_net_lllite_patch(q, k, v, extra_options)`` adds ``module(q)`` (and
k, v) for the module named after ``extra_options["block"]`` / ``["block_index"]``. Each module embeds
the control image once (strided convs: /8, /16 or /32 by depth) into a token sequence and
concatenates it with its projection of the tokens, ``torch.cat([cx, down(x)], dim=2)`` -- which
needs as many tokens as the full-size map has.
"""

from __future__ import annotations

import torch


def extra_options_to_module_prefix(extra_options):
    block, block_index = extra_options["block"], extra_options["block_index"]
    if block[0] == "input":
        return f"lllite_unet_input_blocks_{block[1]}_1_transformer_blocks_{block_index}"
    if block[0] == "middle":
        return f"lllite_unet_middle_block_1_transformer_blocks_{block_index}"
    if block[0] == "output":
        return f"lllite_unet_output_blocks_{block[1]}_1_transformer_blocks_{block_index}"
    raise Exception("invalid block name")


class control_net_lllite_patch:  # noqa: N801 -- Forge's name, which is what hosts can recognise
    def __init__(self, modules):
        self.modules = modules

    def __call__(self, q, k, v, extra_options):
        module_pfx = extra_options_to_module_prefix(extra_options)
        module_pfx += "_attn1" if q.shape[-1] == k.shape[-1] else "_attn2"
        if module_pfx + "_to_q" in self.modules:
            q = q + self.modules[module_pfx + "_to_q"](q)
        if module_pfx + "_to_k" in self.modules:
            k = k + self.modules[module_pfx + "_to_k"](k)
        if module_pfx + "_to_v" in self.modules:
            v = v + self.modules[module_pfx + "_to_v"](v)
        return q, k, v


class LLLiteModule(torch.nn.Module):
    def __init__(self, name, in_dim, depth, cond_emb_dim, mlp_dim, multiplier=1.0):
        super().__init__()
        self.name, self.multiplier = name, multiplier
        layers = [torch.nn.Conv2d(3, cond_emb_dim // 2, kernel_size=4, stride=4)]
        if depth == 1:
            layers += [
                torch.nn.ReLU(),
                torch.nn.Conv2d(cond_emb_dim // 2, cond_emb_dim, kernel_size=2, stride=2),
            ]
        elif depth == 2:
            layers += [
                torch.nn.ReLU(),
                torch.nn.Conv2d(cond_emb_dim // 2, cond_emb_dim, kernel_size=4, stride=4),
            ]
        else:
            layers += [
                torch.nn.ReLU(),
                torch.nn.Conv2d(cond_emb_dim // 2, cond_emb_dim // 2, kernel_size=4, stride=4),
                torch.nn.ReLU(),
                torch.nn.Conv2d(cond_emb_dim // 2, cond_emb_dim, kernel_size=2, stride=2),
            ]
        self.conditioning1 = torch.nn.Sequential(*layers)
        self.down = torch.nn.Sequential(torch.nn.Linear(in_dim, mlp_dim), torch.nn.ReLU())
        self.mid = torch.nn.Sequential(torch.nn.Linear(mlp_dim + cond_emb_dim, mlp_dim), torch.nn.ReLU())
        self.up = torch.nn.Sequential(torch.nn.Linear(mlp_dim, in_dim))
        self.cond_image = self.cond_emb = None

    def set_cond_image(self, cond_image):
        self.cond_image, self.cond_emb = cond_image, None

    def forward(self, x):
        if self.cond_emb is None:
            cx = self.conditioning1(self.cond_image.to(x.device, dtype=x.dtype))
            n, c, h, w = cx.shape
            self.cond_emb = cx.view(n, c, h * w).permute(0, 2, 1)
        cx = self.cond_emb
        if x.shape[0] != cx.shape[0]:
            cx = cx.repeat(x.shape[0] // cx.shape[0], 1, 1)
        cx = torch.cat([cx, self.down(x)], dim=2)
        return self.up(self.mid(cx)) * self.multiplier
