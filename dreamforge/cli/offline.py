"""Commands that need no service: the config schema, presets, a starter config, a prediction
with an exported model, and a reward tried on a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dreamforge.cli.console import fail


def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the schema to this file.")] = None,
) -> None:
    """Print the JSON Schema of dreamforge.config.json (for editors and CI)."""
    from pipeline.config import json_schema

    text = json.dumps(json_schema(), indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        typer.echo(text)


def presets() -> None:
    """List the curriculum presets and what they set."""
    from pipeline.config import load_preset, preset_names

    for name in preset_names():
        p = load_preset(name)
        typer.echo(f"{name:16} task={p.get('task', 'detect'):9} dataset={p.get('data', {}).get('dataset', '-')}")


def predict(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder (model/ or model-4bit/).")],
    image: Annotated[Path, typer.Argument(help="An image file.")],
    prompt: Annotated[str | None, typer.Option(help="Override the task prompt.")] = None,
    draw: Annotated[Path | None, typer.Option(help="Write the image with the prediction drawn on it.")] = None,
) -> None:
    """Run an exported model on one image and print the parsed structure as JSON."""
    try:
        result = _predict(model_dir, image, prompt, draw)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(result))


def _predict(model_dir: Path, image: Path, prompt: str | None, draw: Path | None) -> dict:
    from pipeline.codec import CODEC_FILE
    from pipeline.codecs import codec_from_spec

    # the user's mistakes first, before seconds of torch imports
    meta = model_dir / CODEC_FILE
    if not meta.exists():
        raise FileNotFoundError(f"{model_dir}: no {CODEC_FILE}; point at an exported model folder (OUTPUT/model)")
    if not image.exists():
        raise FileNotFoundError(f"{image}: no such image")
    from PIL import Image, UnidentifiedImageError

    from pipeline.data.images import upright_rgb
    from pipeline.device import pick_device
    from pipeline.draw import draw_target
    from pipeline.models.loading import load_model
    from pipeline.predict import generate_texts
    from pipeline.run import quiet_libraries

    quiet_libraries()
    try:
        im = upright_rgb(Image.open(image))
    except UnidentifiedImageError:
        raise ValueError(f"{image}: not an image Pillow can read") from None
    c = json.loads(meta.read_text())
    codec = codec_from_spec(c)
    if prompt:
        codec.prompt = lambda: prompt  # type: ignore[method-assign]
    quantized = (model_dir / "config.json").exists() and "quantization_config" in (model_dir / "config.json").read_text()
    device = pick_device()
    model, processor = load_model(model_dir, device)
    text = generate_texts(model, processor, [im], codec, batch_size=1)[0]
    target, ok = codec.decode(text, im.width, im.height)
    if draw:
        draw_target(im, target).save(draw)
    return {"text": text, "parsed": ok, "quantized": quantized, "prediction": target}


def data_show(
    dataset: Annotated[str, typer.Argument(help="Dataset URI: folder, .zip, s3://, gs:// or synthetic://KIND.")],
    model: Annotated[str, typer.Option(help="A model folder, a hub id, a family (qwen2_5_vl, qwen2_vl, qwen3_vl, "
                                       "florence2, paligemma, idefics3, llava) or dreamforge-tiny.")] = "dreamforge-tiny",
    n: Annotated[int, typer.Option(min=1, max=1000, help="How many samples to show.")] = 3,
    task: Annotated[str, typer.Option(help="detect, segment, keypoints or caption.")] = "detect",
    codec: Annotated[str, typer.Option(help="Output format: auto, loc, qwen-json, florence, paligemma or text.")] = "auto",
    num_bins: Annotated[int, typer.Option(min=4, max=4096, help="Bins of the loc and text formats.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of samples.")] = False,
) -> None:
    """Print, per sample, the prompt and the exact text the model would be trained to answer."""
    from pipeline.data.errors import DataError
    from pipeline.show import show_samples

    try:
        rows, why = show_samples(dataset, model, task=task, n=n, codec=codec, num_bins=num_bins)
    except DataError as e:
        raise fail(str(e), 2) from None
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"output format {why}")
    for r in rows:
        size = f"{r['width']}x{r['height']}" + (f" (fed as {r['input_width']}x{r['input_height']})"
                                                if (r["input_width"], r["input_height"]) != (r["width"], r["height"]) else "")  # fmt: skip
        typer.echo(f"\n{r['file']}  {size}\n  prompt: {r['prompt']!r}\n  target: {r['target']}")


def reward_test(
    reward: Annotated[str, typer.Argument(help="A .js file defining reward(out, gt), example:NAME, or a built-in name.")],
    dataset: Annotated[str, typer.Option(help="Dataset URI whose ground truths the reward is run on.")],
    samples: Annotated[int, typer.Option(min=1, max=1000, help="How many ground truths to use.")] = 16,
    task: Annotated[str, typer.Option(help="detect, segment, keypoints or caption.")] = "detect",
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Run a reward on ground truth against perturbed predictions (exact, shifted, missing,
    extra) and print each case's scores and spread; exit code 1 on any error."""
    from pipeline.data.errors import DataError
    from pipeline.rewards.base import RewardError
    from pipeline.rewards.probe import dataset_targets, load_any_reward, probe_reward

    reward_obj = None
    try:
        targets = dataset_targets(dataset, task, samples)
        if not targets:
            raise fail(f"{dataset}: no labelled images to test the reward on", 2)
        reward_obj = load_any_reward(reward, task)
        rows = probe_reward(reward_obj, targets)
    except RewardError as e:
        raise fail(str(e)) from None
    except DataError as e:
        raise fail(str(e), 2) from None
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("'")) from None
    finally:
        if reward_obj is not None and hasattr(reward_obj, "close"):
            reward_obj.close()
    if as_json:
        typer.echo(json.dumps({"reward": reward, "samples": len(targets), "cases": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{reward} on {len(targets)} ground truths of {dataset}")
    for col in ("case", "mean", "min", "max", "std"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        table.add_row(r["case"], *(f"{r[k]:.4f}" for k in ("mean", "min", "max", "std")))
    console = Console()
    console.print(table)
    means = {r["case"]: r["mean"] for r in rows}
    if max(means.values()) - min(means.values()) < 1e-9:
        console.print("[yellow]warning: every case scores the same: GRPO gets no signal from this reward[/]")
    elif means["exact"] < max(means.values()):
        console.print("[yellow]warning: a perturbed prediction scores higher than the exact one[/]")


def init(
    preset: Annotated[str, typer.Option(help="Preset to start from.")] = "retail-shelf",
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("dreamforge.config.json"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write dreamforge.config.json from a preset (every field explicit, ready to edit)."""
    from pipeline.config import ConfigError, build_config

    if out.exists() and not force:
        raise fail(f"{out} exists; pass --force to overwrite it")
    try:
        cfg = build_config({}, preset=preset)
    except ConfigError as e:
        raise fail(str(e), 2) from None
    out.write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2) + "\n")
    typer.echo(f"wrote {out} (preset {preset}); check it with `dreamforge schema` in your editor")
