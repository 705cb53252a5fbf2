"""SD.Next's XYZ grid script, reduced (scripts/xyz_grid.py + scripts/xyz/xyz_grid_classes.py@058a7f0c).

What an extension touches: the module-level ``axis_options`` list and
``AxisOption(label, tipe, apply, fmt=..., confirm=None, cost=0.0, choices=None)``
(xyz_grid_classes.py:48-58). SD.Next has no ``boolean_choice`` and no ``confirm_range`` helpers.
"""

from modules import scripts_manager


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


class AxisOption:
    def __init__(self, label, tipe, apply, fmt=format_value_add_label, confirm=None, cost=0.0, choices=None):
        self.label = label
        self.type = tipe
        self.apply = apply
        self.format_value = fmt
        self.confirm = confirm
        self.cost = cost
        self.choices = choices


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_override(field):
    def fun(p, x, xs):
        p.override_settings[field] = x

    return fun


axis_options = [
    AxisOption("Nothing", str, lambda p, x, xs: None),
    AxisOption("Steps", int, apply_field("steps")),
    # SD.Next's own HiDiffusion settings (xyz_grid_classes.py:279-281): the same "[HiDiffusion] T1/T2" labels
    AxisOption("[HiDiffusion] T1", float, apply_override("hidiffusion_t1")),
    AxisOption("[HiDiffusion] T2", float, apply_override("hidiffusion_t2")),
    AxisOption("[HiDiffusion] Aggression step", float, apply_field("hidiffusion_steps")),
]


class XYZGridScript(scripts_manager.Script):
    def title(self):
        return "XYZ Grid"

    def ui(self, is_img2img):
        return []
