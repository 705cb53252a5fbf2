"""The X/Y/Z plot script, reduced to what extensions touch: AxisOption, axis_options, helpers,
and its cell loop (each cell runs process_images on a shallow ``copy(p)``)."""

from copy import copy

from modules import processing, scripts


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def confirm_range(min_val, max_val, axis_label):
    def confirm_range_fun(p, xs):
        for x in xs:
            if not (max_val >= x >= min_val):
                raise ValueError(f'{axis_label} value "{x}" out of range [{min_val}, {max_val}]')

    return confirm_range_fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


axis_options = [
    AxisOption("Nothing", str, lambda p, x, xs: None),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Sampler", str, apply_field("sampler_name")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
]


def run_cells(p, label, values):
    """One row of a plot: values of axis ``label`` as XYZ would parse, confirm and apply them."""
    opt = next(o for o in axis_options if o.label == label)
    xs = [opt.type(v) for v in values]
    if opt.confirm:
        opt.confirm(p, xs)
    results = []
    for x in xs:
        pc = copy(p)
        opt.apply(pc, x, xs)
        results.append((pc, processing.process_images(pc)))
    return results


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def show(self, is_img2img):
        return True
