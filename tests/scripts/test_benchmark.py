"""scripts/benchmark.py: its smoke run (--quick) prints every inference table with the shipped policy, and its flags."""

from __future__ import annotations

import re

import pytest

from scripts import benchmark

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def table_rows(output: str, title: str) -> list[dict[str, str]]:
    """The rows of the Markdown table printed under the line starting with ``title``, as header -> cell."""
    lines = output[output.index(title):].splitlines()[1:]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_quick_run_prints_fps_stages_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    benchmark.main(["--quick", "--threads", "1"])
    output = capsys.readouterr().out
    assert output.startswith("device: ")
    [speed] = table_rows(output, "1. frames/s")
    assert list(speed) == ["size", "baseline fps", "policy fps", "policy / baseline fps", "baseline fps, file",
                           "policy fps, file", "policy / baseline fps, file"]
    assert speed["size"] == "128x128"  # wolf.mp4 is square
    values = {key: float(value) for key, value in speed.items() if key != "size"}
    assert all(value > 0 for value in values.values())
    assert values["policy / baseline fps"] == pytest.approx(values["policy fps"] / values["baseline fps"], rel=0.01)
    # the shipped policy, its pixel warp re-encoded by the light encoder (pipeline.latents.codecs.load_warp_codec)
    assert "reinforce policy (flow observation, pixel warp re-encoded by madebyollin/taesd:taef2+taef2-lite), " \
           "content flow " in output

    stages = {row["stage"]: float(row["128x128"]) for row in table_rows(output, "2. ms per frame of each stage")}
    flow_stage = next(name for name in stages if name.startswith("content flow ("))
    assert {"stylize (encode + latent-wct)", "decode", "policy network", "pixel warp (2 encodes a frame)",
            "pixel warp (2 encodes a frame, the codec's encoder instead)", "rollout decodes (1 a frame)",
            "measured: baseline", "measured: policy pipeline"} <= set(stages)
    # what the policy pipeline runs: not the baseline's decode, nor the comparison row
    run = {"stylize (encode + latent-wct)", flow_stage, "policy network", "pixel warp (2 encodes a frame)",
           "rollout decodes (1 a frame)"}
    policy_sum = sum(v for k, v in stages.items() if k in run)
    assert stages["sum: policy pipeline stages"] == pytest.approx(policy_sum, rel=0.01)
    assert flow_stage.removeprefix("content flow (").removesuffix(")") in output.split("content flow ")[1]
    assert all(value > 0 for value in stages.values())

    memory = table_rows(output, "3. peak memory")
    assert [row["frames"] for row in memory] == ["4", "8"] and all(float(row["peak RSS MiB"]) > 100 for row in memory)
    assert re.search(r"ratio 8/4 frames: peak RSS x\d+\.\d{3}", output)
    assert "4. training" not in output  # --quick skips it


@pytest.mark.fast
def test_defaults_and_quick_defaults_yield_to_explicit_flags() -> None:
    args = benchmark.parse_args([])
    assert (args.sizes, args.lengths, args.train_sizes, args.policy) == ([256, 512], [48, 240], [256], "default")
    assert not args.skip_training and not args.skip_memory
    quick = benchmark.parse_args(["--quick", "--sizes", "64", "96"])
    assert (quick.sizes, quick.frames, quick.repeats, quick.lengths, quick.skip_training) == ([64, 96], 4, 1, [4, 8], True)
    assert not benchmark.parse_args(["--quick", "--no-skip-training"]).skip_training
    assert benchmark.quick_flags() == "--sizes 128 --frames 4 --repeats 1 --lengths 4 8 --skip-training"
