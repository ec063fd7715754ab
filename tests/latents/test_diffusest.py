"""DiffuseST stylizer, DDIM inversion and PnP injection, on tiny random diffusers models.

Stable Diffusion, its CLIP text encoder and BLIP-Diffusion cannot be had
offline, so the components are randomly initialised instances of the same
classes (sizes as in diffusers' own pipeline tests); the CLIP tokenizer is
built in memory over the byte-level alphabet (no merges). Frames and styles
are the real photos and paintings of ../shared/data.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from pipeline.io.images import load_image
from pipeline.io.weights import WeightsNotFoundError
from pipeline.latents.stylizers import build_stylizer
from pipeline.latents.stylizers.ddim_inversion import ddim_invert
from pipeline.latents.stylizers.diffusest import (
    BlipDiffusionStyleEncoder,
    DiffuseSTConfig,
    DiffuseSTStylizer,
    fit_style,
)
from pipeline.latents.stylizers.pnp_injection import (
    FEATURES,
    KEY_VALUE,
    QUERY_KEY,
    PnPInjector,
    StepPlan,
)
from tests.helpers import (
    TINY_SD_LAYERS,
    save_sd_folder,
    tiny_sd_parts,
    tiny_text_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TINY_LAYERS = TINY_SD_LAYERS
NO_INJECTION = {"content_feature_range": (0, 0), "content_attention_range": (0, 0), "style_attention_range": (0, 0)}


@pytest.fixture(scope="module")
def parts(data_dir) -> dict:
    """Tiny random SD-class components (``tests.helpers.tiny_sd_parts``), calibrated on two real photos."""
    return tiny_sd_parts(load_photos(data_dir))


def load_photos(data_dir) -> torch.Tensor:
    return torch.cat([fit_style(load_image(data_dir / "photos" / name), (64, 64))
                      for name in ("astronaut.png", "chelsea.png")])


@pytest.fixture(scope="module")
def frames(data_dir) -> torch.Tensor:
    return load_photos(data_dir)


@pytest.fixture(scope="module")
def style(data_dir) -> torch.Tensor:
    return load_image(data_dir / "styles" / "starry_night.jpg")


def make(parts: dict, **settings) -> DiffuseSTStylizer:
    config = DiffuseSTConfig(**{"num_inference_steps": 10, **TINY_LAYERS, **settings})
    return DiffuseSTStylizer(parts["unet"], parts["scheduler"], parts["codec"], parts["text_encoder"],
                             parts["tokenizer"], config=config)


@pytest.fixture(scope="module")
def batch_output(parts, frames, style) -> torch.Tensor:
    return make(parts).stylize(frames, style)


def test_output_shape_and_differs_from_content(parts, frames, batch_output):
    assert batch_output.shape == (2, 4, 8, 8)
    assert batch_output.dtype == torch.float32 and torch.isfinite(batch_output).all()
    content = parts["codec"].encode(frames)
    assert (batch_output - content).abs().mean() > 0.1 * content.abs().mean()


def test_frames_are_independent(parts, frames, style, batch_output):
    for i in range(2):
        alone = make(parts).stylize(frames[i : i + 1], style)
        assert torch.equal(alone, batch_output[i : i + 1])


def test_seeded_and_deterministic(parts, frames, style):
    frame = frames[:1]
    first = make(parts, eta=0.5, seed=3).stylize(frame, style)
    again = make(parts, eta=0.5, seed=3).stylize(frame, style)
    other = make(parts, eta=0.5, seed=4).stylize(frame, style)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3


def test_ddim_inversion_then_sampling_reconstructs(parts, frames, style):
    """Inversion + sampling (guidance 1, same text) returns to the latent; the error shrinks with steps.

    A random UNet's noise prediction varies far faster along the trajectory
    than a trained one's, and on SD's schedule (noise up to sigma = 14.6) its
    inversion error does not settle within 100 steps; on a milder schedule
    (alpha_T = 0.09) it shows DDIM's first-order convergence.
    """
    mild = diffusers.DDIMScheduler(beta_start=1e-4, beta_end=4e-3, beta_schedule="linear", clip_sample=False,
                                   set_alpha_to_one=False, steps_offset=1)
    content = parts["codec"].encode(frames[:1])
    errors = {}
    for steps in (5, 100):
        stylizer = DiffuseSTStylizer(parts["unet"], mild, parts["codec"], parts["text_encoder"], parts["tokenizer"],
                                     config=DiffuseSTConfig(num_inference_steps=steps, guidance_scale=1.0, prompt="",
                                                            **TINY_LAYERS, **NO_INJECTION))
        trajectory = ddim_invert(parts["unet"], stylizer.scheduler, content, stylizer.encode_prompt(""), steps)
        assert sorted(trajectory) == sorted(stylizer.scheduler.timesteps.tolist())
        reconstruction = stylizer.stylize(frames[:1], style)
        errors[steps] = ((reconstruction - content).norm() / content.norm()).item()
    assert errors[100] < 0.05, errors
    assert errors[5] > 4 * errors[100], errors


def test_injections_happen_exactly_in_the_configured_ranges(parts, frames, style):
    stylizer = make(parts, content_feature_range=(0.0, 0.4), content_attention_range=(0.0, 0.2),
                    style_attention_range=(0.7, 1.0))
    state = stylizer.prepare_style(style)
    stylizer.stylize_prepared(frames[:1], state)
    timesteps = [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]  # 10 DDIM steps, steps_offset 1
    assert stylizer.scheduler.timesteps.tolist() == timesteps
    assert sorted(state.trajectories[(64, 64)]) == [1, 101, 201]  # the style is inverted only as far as needed
    expected = Counter()
    for kind, steps, layers in ((FEATURES, range(0, 4), TINY_LAYERS["feature_layers"]),
                                (QUERY_KEY, range(0, 2), TINY_LAYERS["attention_layers"]),
                                (KEY_VALUE, range(7, 10), TINY_LAYERS["attention_layers"])):
        expected.update((timesteps[i], layer, kind) for i in steps for layer in layers)
    assert Counter((r.timestep, r.layer, r.kind) for r in stylizer.last_injections) == expected


def test_empty_ranges_equal_plain_sampling_from_inverted_noise(parts, frames, style):
    stylizer = make(parts, **NO_INJECTION)
    output = stylizer.stylize(frames[:1], style)
    assert stylizer.last_injections == []
    unet, scheduler = parts["unet"], stylizer.scheduler
    source = stylizer.encode_prompt("")
    with torch.no_grad():
        trajectory = ddim_invert(unet, scheduler, parts["codec"].encode(frames[:1]), source, 10)
        sample = trajectory[max(trajectory)]
        cond = torch.cat([stylizer.encode_prompt(""), stylizer.encode_prompt("a painting")])
        for t in scheduler.timesteps.tolist():
            uncond, text = unet(torch.cat([sample, sample]), t, encoder_hidden_states=cond).sample.chunk(2)
            sample = scheduler.step(uncond + 7.5 * (text - uncond), t, sample).prev_sample
    torch.testing.assert_close(output, sample, rtol=1e-5, atol=1e-5)


def test_style_image_acts_only_through_the_style_range(parts, frames, data_dir):
    other = load_image(data_dir / "styles" / "mondrian.jpg")
    starry = load_image(data_dir / "styles" / "starry_night.jpg")
    with_style = make(parts, style_attention_range=(0.5, 1.0))
    difference = (with_style.stylize(frames[:1], starry) - with_style.stylize(frames[:1], other)).abs().max()
    assert difference > 1e-2
    without = make(parts, style_attention_range=(0, 0))
    assert torch.equal(without.stylize(frames[:1], starry), without.stylize(frames[:1], other))


def test_processors_and_hooks_are_restored(parts, frames, style):
    unet = parts["unet"]
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    stylizer = make(parts)
    stylizer.stylize(frames[:1], style)
    with pytest.raises(RuntimeError, match="boom"), stylizer.injector:
        raise RuntimeError("boom")
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    assert all(not module._forward_hooks for module in unet.modules())


def test_attention_injection_semantics(parts):
    """Output rows attend with the content's queries/keys and/or the style's keys/values."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = parts["unet"]
    layer = "up_blocks.0.attentions.1"
    attn = unet.get_submodule(f"{layer}.transformer_blocks.0.attn1")
    hidden = torch.randn(4, 16, attn.query_dim)  # rows: content, style, output (uncond), output (cond)
    content, style, output = hidden[:1], hidden[1:2], hidden[2:]
    reference = AttnProcessor2_0()
    injector = PnPInjector(unet, (), (layer,))
    with torch.no_grad(), injector:
        processor = unet.attn_processors[f"{layer}.transformer_blocks.0.attn1.processor"]
        for query_key, key_value, expected in (
            (False, False, reference(attn, output)),
            (False, True, reference(attn, output, encoder_hidden_states=style.expand(2, -1, -1))),
            (True, True, reference(attn, content, encoder_hidden_states=style).expand(2, -1, -1)),
        ):
            injector.plan = StepPlan(5, 0, 1, slice(2, None), query_key=query_key, key_value=key_value)
            result = processor(attn, hidden)
            torch.testing.assert_close(result[2:], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(result[:2], reference(attn, hidden[:2]), rtol=1e-5, atol=1e-5)


def test_feature_injection_replaces_the_residual_branch(parts):
    unet = parts["unet"]
    layer = "up_blocks.0.resnets.1"
    seen = []
    latents = torch.randn(3, 4, 8, 8)
    cond = torch.randn(3, 77, 32)
    with torch.no_grad(), PnPInjector(unet, (layer,), ()) as injector:
        handle = unet.get_submodule(layer).conv2.register_forward_hook(lambda m, i, out: seen.append(out))
        injector.plan = StepPlan(501, 0, None, slice(1, None), features=True)
        unet(latents, 501, encoder_hidden_states=cond)
        handle.remove()
    (residual,) = seen
    assert torch.equal(residual[1], residual[0]) and torch.equal(residual[2], residual[0])
    assert [(r.layer, r.kind) for r in injector.records] == [(layer, FEATURES)]


def test_bad_settings_give_clear_errors(parts, frames, style):
    with pytest.raises(ValueError, match="style_attention_range"):
        DiffuseSTConfig(style_attention_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffuseSTConfig(num_inference_steps=0)
    with pytest.raises(ValueError, match="up_blocks.9.resnets.0.*not a ResnetBlock2D.*up_blocks.1.resnets.2"):
        make(parts, feature_layers=("up_blocks.1.resnets.0", "up_blocks.9.resnets.0"))
    with pytest.raises(ValueError, match="up_blocks.1.attentions.1.*up_blocks.0.attentions.0"):
        make(parts, attention_layers=("up_blocks.1.attentions.1",))
    with pytest.raises(ValueError, match="clip_sample"):
        DiffuseSTStylizer(parts["unet"], diffusers.DDIMScheduler(), parts["codec"], parts["text_encoder"],
                          parts["tokenizer"], config=DiffuseSTConfig(**TINY_LAYERS))
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        make(parts).stylize(frames[:, :1], style)


def test_config_is_a_json_cache_key(parts):
    first, second = make(parts).config(), make(parts, seed=1).config()
    assert json.loads(json.dumps(first)) == json.loads(json.dumps(first, sort_keys=True))
    assert first["stylizer"] == "diffusest" and first != second


@pytest.mark.fast
def test_from_pretrained_missing_model_is_clear(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="UNet.*no-such-org/no-such-model.*huggingface-cli download"):
        build_stylizer("diffusest", DiffuseSTConfig(model="no-such-org/no-such-model"))
    with pytest.raises(WeightsNotFoundError, match="missing"):
        DiffuseSTStylizer.from_pretrained(DiffuseSTConfig(model=str(tmp_path / "missing")))
    with pytest.raises(WeightsNotFoundError, match="no unet/ subfolder"):
        DiffuseSTStylizer.from_pretrained(DiffuseSTConfig(model=str(tmp_path)))
    with pytest.raises(ValueError, match="takes no codec"):
        build_stylizer("diffusest", codec=SimpleNamespace(name="taef2"))


def test_from_pretrained_local_folder(parts, frames, style, tmp_path):
    save_sd_folder(parts, tmp_path)
    loaded = build_stylizer("diffusest", DiffuseSTConfig(model=str(tmp_path), num_inference_steps=10, **TINY_LAYERS))
    assert loaded.cfg.num_inference_steps == 10 and loaded.unet.dtype == torch.float32
    assert "model" not in loaded.config()  # the cache key records the loaded UNet instead
    torch.testing.assert_close(loaded.stylize(frames[:1], style), make(parts).stylize(frames[:1], style),
                               rtol=1e-5, atol=1e-5)


def test_blip_diffusion_checkpoint_loads_and_conditions_the_output(parts, frames, style, tmp_path, data_dir):
    """A tiny BLIP-Diffusion checkpoint loads through from_pretrained; its Q-Former embeds the style."""
    pipeline_class = diffusers.pipelines.BlipDiffusionPipeline
    blip = importlib.import_module(pipeline_class.__module__)  # moved in diffusers 0.36
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghij"]))
    config = transformers.Blip2Config(
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
                       "patch_size": 8, "intermediate_size": 37,
                       "initializer_range": 0.02},  # the vision default (1e-10) gives an image-blind random model
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                        "vocab_size": 16, "encoder_hidden_size": 32, "max_position_embeddings": 32},
        num_query_tokens=4,
    )
    config.tokenizer = str(tmp_path)  # the Q-Former's BERT tokenizer, instead of bert-base-uncased from the hub
    checkpoint = tmp_path / "blipdiffusion"
    pipeline_class(
        parts["tokenizer"], blip.ContextCLIPTextModel(tiny_text_config(parts["tokenizer"])), parts["codec"].vae,
        parts["unet"], diffusers.PNDMScheduler(beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1),
        blip.Blip2QFormerModel(config), blip.BlipImageProcessor(size={"height": 32, "width": 32}),
        ctx_begin_pos=2, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
    ).save_pretrained(checkpoint)

    stylizer = DiffuseSTStylizer.from_pretrained(DiffuseSTConfig(model=str(checkpoint), blip_diffusion=str(checkpoint),
                                                                 num_inference_steps=4, **TINY_LAYERS))
    encoder = stylizer.style_encoder
    assert isinstance(encoder, BlipDiffusionStyleEncoder) and stylizer.text_encoder is encoder.text_encoder
    assert (encoder.ctx_begin_pos, encoder.mean) == (2, [0.5, 0.5, 0.5])
    assert stylizer.config()["style_encoder"] == str(checkpoint)
    state = stylizer.prepare_style(style)  # runs under the installed transformers (5.x: qformer_class's adapter)
    assert state.cond.shape == (1, 77, 32)
    assert not torch.allclose(state.cond, stylizer.encode_prompt(stylizer.cfg.prompt))
    other = stylizer.prepare_style(load_image(data_dir / "styles" / "mondrian.jpg"))
    assert (other.cond - state.cond).abs().max() > 1e-4  # the embedding depends on the style image
    assert torch.isfinite(stylizer.stylize_prepared(frames[:1], state)).all()


def test_finer_inversion_keeps_the_sampling_timesteps(parts, frames, style):
    """A 20-step inversion feeds the 10-step sampling its latents at the sampling timesteps (as the release's 999
    steps feed 50); the result differs from the 10-step inversion's, and schedules that miss them are refused."""
    ranges = {"style_attention_range": (0.8, 1.0)}
    coarse, fine = make(parts, **ranges), make(parts, inversion_steps=20, **ranges)
    state = fine.prepare_style(style)
    output = fine.stylize_prepared(frames[:1], state)
    assert sorted(state.trajectories[(64, 64)]) == [1, 101]  # sampling timesteps of the style range only
    assert torch.isfinite(output).all() and (output - coarse.stylize(frames[:1], style)).abs().max() > 1e-3
    assert fine.scheduler.timesteps.tolist() == coarse.scheduler.timesteps.tolist()
    make(parts, inversion_steps=999)  # the release's length: every timestep 1..999
    with pytest.raises(ValueError, match="inversion_steps 15.*missing the sampling timesteps"):
        make(parts, inversion_steps=15)
    with pytest.raises(ValueError, match="beyond the model's 1000 training timesteps"):
        make(parts, inversion_steps=1000)
    with pytest.raises(ValueError, match="at least num_inference_steps"):
        DiffuseSTConfig(num_inference_steps=10, inversion_steps=5)


def test_release_negative_prompt():
    from pipeline.latents.stylizers.diffusest import RELEASE_NEGATIVE_PROMPT

    assert DiffuseSTConfig(negative_prompt="release").negative_prompt == RELEASE_NEGATIVE_PROMPT
    assert DiffuseSTConfig().negative_prompt == ""
