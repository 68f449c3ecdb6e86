"""The grid of `surgery sweep` and `surgery demo`: the cells from the command-line texts (`--poison-ratios`,
`--methods`, `--alphas`, `--grid KEY=V1,V2`, `--seeds`), each named by its values.

A cell is one poison ratio x one registered defense (Surgery once per alpha) x one value of each shared
`--grid` key x one value of each key in the defense's own section x one seed. Bad texts raise InputError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..train.defenses import STAGES, registry
from ..train.recipe import load_recipe


def parse_floats(text: str, option: str, low: float = 0.0, high: float | None = None) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if not values or bad:
        raise InputError(f"{option} {text!r}: expected numbers in [{low:g}, {high if high is not None else 'inf'}]")
    return values


OWNED_KEYS = {"data.poison_ratio": "--poison-ratios", "defense.method": "--methods",
              "train.seed": "--seeds", "model.name": "the recipe (or --align-recipe)",
              "output.dir": "--out"}  # set by the sweep itself: --grid refuses them


def cell_name(ratio: float, method: str, alpha: float | None, values: dict[str, str] | None = None,
              seed: int | None = None, options: dict[str, str] | None = None) -> str:
    """`p0.1-surgery-a300` (`p0.1-lisa-rho=0.5` for the method's own axes), then `-KEY=VALUE` per grid key and
    `-s1` for a seed: a cell's values in its name."""
    return (f"p{ratio:g}-{method}" + (f"-a{alpha:g}" if alpha is not None else "")
            + "".join(f"-{k}={v}" for k, v in (options or {}).items())
            + "".join(f"-{k}={v}" for k, v in (values or {}).items()) + (f"-s{seed}" if seed is not None else ""))


@dataclass(frozen=True)
class Cell:
    """One point of a sweep's grid: what its fine-tune changes in the recipe. Its name holds its values."""

    poison_ratio: float
    method: str
    alpha: float | None = None  # Surgery's alpha (None for every other method)
    grid: tuple[tuple[str, str], ...] = ()  # (recipe key, value text) per --grid axis every method shares
    seed: int | None = None  # train.seed (None: the recipe's)
    options: tuple[tuple[str, str], ...] = ()  # (key of the method's own section, value text): its own axes

    @property
    def name(self) -> str:
        return cell_name(self.poison_ratio, self.method, self.alpha, dict(self.grid), self.seed, dict(self.options))

    def overrides(self, aligned: Path | None = None) -> list[str]:
        """The cell's recipe changes: its poison ratio, its fine-tuning-stage defense (SFT where the method or
        chain has none: an alignment-stage defense already ran), its post-fine-tuning one, Surgery's alpha, grid
        values, seed, and the aligned model it attacks (when there is one)."""
        sets = [f"data.poison_ratio={self.poison_ratio}", f"defense.method={part(self.method, 'finetune') or 'sft'}"]
        sets += [f"defense.post={post}"] if (post := part(self.method, "post")) else []
        sets += [f"surgery.alpha={self.alpha}"] if self.alpha is not None else []
        sets += [f"{k}={v}" if "." in k else f"{self.method}.{k}={v}" for k, v in self.options]  # see _own_key
        sets += [f"{k}={v}" for k, v in self.grid]
        sets += [f"train.seed={self.seed}"] if self.seed is not None else []
        return sets + ([f"model.name={aligned}"] if aligned is not None else [])

    def record(self) -> dict:
        """The cell's fields as cell.json and sweep.json hold them."""
        return {"name": self.name, "poison_ratio": self.poison_ratio, "method": self.method, "alpha": self.alpha,
                "options": dict(self.options), "grid": dict(self.grid), "seed": self.seed}


def grid(ratios: list[float], methods: list[str], alphas: list[float], axes: dict[str, list[str]] | None = None,
         seeds: list[int] | None = None) -> list[Cell]:
    """Cells in run order: seed by seed (so a partial study is balanced), each grid point, then every method at
    the first ratio, then the next ratio; Surgery once per alpha. `axes`: recipe key -> value texts. An axis
    in a defense's own section (`lisa.rho`) multiplies the cells of that defense (and of chains holding it) only;
    the others, every cell."""
    import itertools

    def points(keys: dict[str, list[str]]) -> list[tuple[tuple[str, str], ...]]:
        return [tuple(zip(keys, vs)) for vs in itertools.product(*keys.values())]

    axes = axes or {}
    shared = {k: v for k, v in axes.items() if k.partition(".")[0] not in registry()}
    own = {m: points({_own_key(m, k): v for k, v in axes.items() if k.partition(".")[0] in parts(m).values()})
           for m in methods}
    return [Cell(r, method, a, values, seed, options)
            for seed in (seeds if seeds is not None else [None]) for values in points(shared) for r in ratios
            for method in methods for a in (alphas if part(method, "finetune") == "surgery" else [None])
            for options in own[method]]


def _own_key(method: str, key: str) -> str:
    """An own axis's key in a cell: bare for a defense alone (`rho`), whole in a chain (`antidote.dense_ratio`)."""
    return key.partition(".")[2] if method in registry() else key


def parse_grid(texts: list[str]) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2,...` (repeatable) -> {KEY: [V1, V2, ...]}; the values stay text, read as `--set` reads
    them. InputError for a bad one; the keys are checked when each cell's recipe is validated."""
    axes: dict[str, list[str]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or "." not in key or not items:
            raise InputError(f"--grid {text!r}: expected SECTION.KEY=V1,V2,... (e.g. train.learning_rate=1e-4,2e-4)")
        if key in OWNED_KEYS:
            raise InputError(f"--grid {key}: the sweep sets this key itself; use {OWNED_KEYS[key]}")
        if key in axes:
            raise InputError(f"--grid {key}: given twice; list every value in one --grid")
        if len(set(items)) != len(items):
            raise InputError(f"--grid {text!r}: a value is listed twice")
        axes[key] = items
    return axes


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` -> [0, 1, 2] (None: no option, each cell keeps the recipe's train.seed)."""
    if text is None:
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected comma-separated integers >= 0") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r}: expected distinct comma-separated integers >= 0")
    return seeds


def parse_methods(methods: str) -> list[str]:
    """`--methods` names, each a registered defense or a chain of them, one per stage (`booster+lisa+antidote`;
    `all`: every defense alone); InputError naming what is wrong otherwise. A chain is named in stage order."""
    names = list(registry()) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise InputError(f"--methods {methods!r}: expected `all` or a comma-separated list of {', '.join(registry())}")
    chains = ["+".join(parts(name, "--methods").values()) for name in names]
    if len(set(chains)) != len(chains):
        raise InputError(f"--methods {methods!r}: a method or chain is listed twice")
    return chains


def parts(method: str, option: str = "method") -> dict[str, str]:
    """{stage: defense} of one defense or a chain `a+b+c`, in stage order; InputError for an unknown name or
    two defenses of one stage."""
    found: dict[str, str] = {}
    for name in method.split("+"):
        if name not in registry():
            raise InputError(f"{option} {method}: unknown defense {name!r} (expected {', '.join(registry())}, or a "
                             f"chain of them joined by +, one per stage)")
        s = registry()[name].stage
        if s in found:
            raise InputError(f"{option} {method}: {found[s]} and {name} are both {s}-stage defenses; a chain takes one "
                             f"defense per stage (alignment, fine-tuning, post-fine-tuning)")
        found[s] = name
    return {s: found[s] for s in STAGES if s in found}


def part(method: str, stage: str) -> str | None:
    """The defense a method or chain runs in `stage` (align, finetune, post), or None."""
    return parts(method).get(stage)


def plan(recipe: Path, overrides: list[str], poison_ratios: str, methods: str, alphas: str | None,
         align_recipe: Path | None = None, grid_texts: list[str] | None = None, seeds: str | None = None) -> list[Cell]:
    """The grid from the command-line texts; InputError for a bad list. Alphas default to the recipe's."""
    ratios = parse_floats(poison_ratios, "--poison-ratios", 0.0, 1.0)
    axes, seed_list = parse_grid(grid_texts or []), parse_seeds(seeds)
    names = parse_methods(methods)
    named = {d for n in names for d in parts(n).values()}  # every defense of every chain
    for key in axes:
        section = key.partition(".")[0]
        if section in registry() and section not in named:
            raise InputError(f"--grid {key}: {section} is not among --methods ({','.join(names)}); its own axis would "
                             f"multiply no cell")
        if section in registry() and registry()[section].stage == "align":
            raise InputError(f"--grid {key}: {section} runs when the model is aligned, once per sweep; set its option "
                             f"with --align-set {key}=VALUE (a sweep per value)")
    aligning = [m for m in names if part(m, "align")]
    if aligning and align_recipe is None:
        raise InputError(f"--methods {','.join(aligning)}: alignment-stage defenses align the model before the attack; "
                         f"give the alignment recipe with --align-recipe ALIGN.toml")
    if "surgery.alpha" in axes:  # the long form of --alphas
        if alphas is not None:
            raise InputError("--grid surgery.alpha: given with --alphas too; use one")
        alphas = ",".join(axes.pop("surgery.alpha"))
    if alphas is None:
        alpha_list = [load_recipe(recipe, overrides, None, check_files=False).methods["surgery"].alpha]
    else:
        alpha_list = parse_floats(alphas, "--alphas")
    return grid(ratios, names, alpha_list, axes, seed_list)
