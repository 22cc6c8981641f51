"""``EqDiffPipeline``: inference with a learned concept, diffusers-style (paper §4.3; docs/method.md, Inference).

Each DDIM step runs the reference pass (the same UNet with stock processors, writing F^r) on the reference
latent — the clean posterior mean by default (official) or noised to the current t — and then the main pass with
RRA reading it. Both CFG rows get reference features: the unconditional row from the empty prompt, the
conditional row from the reference prompt (the prompt without the placeholder, as in training). The condition
is the prompt with S_ori injected at the placeholder's true token positions.

Two exact fast paths: the reference and main rows run in one UNet call per step, and a batch computes
each distinct reference row once — with the clean reference, the unconditional rows of every image share one
row and the samples of one prompt share another (``reference_rows``), so the reference branch of a batch of 8
costs 2 rows instead of 16.

Every image has its own ``torch.Generator``: its initial latent (and any DDIM/ reference noise) comes from it
alone, so an image reproduces independently of the other prompts and of its position in the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from eqdiff.config import ModelConfig, ReferenceNoise
from eqdiff.errors import DataError
from eqdiff.method import rra
from eqdiff.method.fdte import FrequencyEmbeddings, encode_prompt
from eqdiff.method.prompts import remove_placeholder, tokenize, training_reference_prompt
from eqdiff.models.components import Components, Denoiser, load_components
from eqdiff.models.concept import MANIFEST_FILE, Concept, ConceptError, apply_concept, concept_model, load_concept
from eqdiff.models.presets import preset, preset_names
from eqdiff.pipelines.reference import UnconditionalReferenceCache, reference_rows
from eqdiff.prep.subjects import center_crop_resize, image_to_tensor


@dataclass
class EqDiffPipelineOutput:
    images: list[Image.Image] | torch.Tensor
    """PIL images, or (B, 3, H, W) float in [0, 1] with ``output_type="pt"``."""


class EqDiffPipeline(DiffusionPipeline):
    """Stock SD v1.x components + a concept's frequency embeddings and processors.

    diffusers' contract: ``from_pretrained`` loads the base model, ``load_concept`` attaches a concept (as
    ``load_lora_weights`` attaches LoRA weights), ``to`` moves everything. ``from_concept_dir`` does both for a
    concept's own base model. ``save_pretrained`` is diffusers' own and writes the base components only: the
    concept is its own small directory (``eqdiff.models.concept.save_concept``), never a copy of the base model.
    """

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.denoiser = Denoiser(unet)
        self.bank: rra.ReferenceBank | None = None
        self.embeddings: FrequencyEmbeddings | None = None
        self.placeholder: str = ""
        self.placeholder_id: int = -1
        self.reference_image: torch.Tensor | None = None
        self.reference_mask: torch.Tensor | None = None
        self.resolution: int = 512
        self.use_rra: bool = False
        self._unconditional_reference = UnconditionalReferenceCache()
        # The reference rows' text when none is given: the training reference prompt (instance prompt without
        # the placeholder), so inference conditions the reference exactly as every training step did.
        self.default_reference_prompt: str | None = None

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path | ModelConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> EqDiffPipeline:
        """The base model alone, as diffusers' ``from_pretrained``: a preset's name (``"tiny"``, ``"world"``), a local
        diffusers directory, or a ``ModelConfig``. Attach a concept with ``load_concept``."""
        source = pretrained_model_name_or_path
        if isinstance(source, ModelConfig):
            model = source
        elif str(source) in preset_names() and not preset(str(source)).requires_path:
            model = ModelConfig(preset=str(source))
        else:
            if (Path(source) / MANIFEST_FILE).is_file():
                raise ConceptError(
                    f"{source}: is a concept directory, not a base model; use "
                    "EqDiffPipeline.from_concept_dir(path) or pipe.load_concept(path)"
                )
            model = ModelConfig(preset="sd-v1", path=str(source))
        components = load_components(model).to(device, dtype)
        return cls.from_components(components, None, -1, "", rra.ReferenceBank(), False, components.native_resolution)

    def load_concept(self, concept_dir: str | Path) -> EqDiffPipeline:
        """Attach the concept in ``concept_dir`` (it must have been trained on this base model): its frequency
        embeddings, RRA / Custom Diffusion processors and reference image. Returns the pipeline."""
        if self.embeddings is not None:
            raise ConceptError(f"{concept_dir}: this pipeline already has a concept; load the base model again")
        self._attach(load_concept(concept_dir), concept_dir)
        return self

    def _attach(self, concept: Concept, where: str | Path) -> None:
        self.bank = rra.ReferenceBank()
        self.embeddings, self.placeholder_id = apply_concept(concept, self._base, self.bank, where)
        self.placeholder, self.use_rra = concept.placeholder, concept.rra
        self.resolution = concept.manifest.resolution
        self.reference_image, self.reference_mask = concept.reference_image, concept.reference_mask
        self._unconditional_reference = UnconditionalReferenceCache()
        if concept.manifest.instance_prompt:
            self.default_reference_prompt = training_reference_prompt(
                concept.manifest.instance_prompt, concept.placeholder, concept.manifest.class_noun
            )

    @classmethod
    def from_concept_dir(
        cls,
        concept_dir: str | Path,
        model: ModelConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        model_settings: Mapping[str, Any] | None = None,
    ) -> EqDiffPipeline:
        """The base model the concept was trained on (its manifest's model config, unless ``model`` is given)
        with the concept attached: what ``eqdiff generate`` samples. ``model_settings`` (the params' own ``model``
        values) may move the cache or allow downloads, never change the base model (``concept_model``)."""
        concept = load_concept(concept_dir)
        model = model or concept_model(concept_dir, concept.manifest.config["model"], model_settings or {})
        return cls.from_concept(concept, load_components(model), device, dtype, where=concept_dir)

    def to(self, *args, **kwargs) -> EqDiffPipeline:
        """diffusers' ``to``, and the concept's frequency embeddings with the text encoder."""
        super().to(*args, **kwargs)
        if self.embeddings is not None:
            self.embeddings.to(self.text_encoder.device)
        return self

    @classmethod
    def from_concept(
        cls,
        concept: Concept,
        components: Components,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        where: str | Path = "concept",
    ) -> EqDiffPipeline:
        """Place the base components on ``device`` in ``dtype`` and attach a loaded concept to them (processor
        weights in the UNet's dtype; ``where`` names the concept in errors)."""
        components = components.to(device, dtype)
        pipe = cls.from_components(components, None, -1, "", rra.ReferenceBank(), False, components.native_resolution)
        pipe._attach(concept, where)
        return pipe

    @classmethod
    def from_components(
        cls,
        components: Components,
        embeddings: FrequencyEmbeddings | None,
        placeholder_id: int,
        placeholder: str,
        bank: rra.ReferenceBank,
        use_rra: bool,
        resolution: int,
    ) -> EqDiffPipeline:
        scheduler = DDIMScheduler.from_config(components.noise_scheduler.config)
        pipe = cls(components.vae, components.text_encoder, components.tokenizer, components.unet, scheduler)
        pipe.bank, pipe.embeddings, pipe.placeholder_id, pipe.placeholder = (
            bank,
            embeddings,
            placeholder_id,
            placeholder,
        )
        pipe.use_rra, pipe.resolution = use_rra, resolution
        pipe._base = components  # the identity (fingerprint) a concept is checked against
        return pipe

    # ------------------------------------------------------------------------------------------------------
    def _reference_latents(self, image: Image.Image | torch.Tensor | None, side: int) -> torch.Tensor:
        """(1, 4, h, w) clean posterior mean × scaling factor of the reference image."""
        if image is None:
            if self.reference_image is None:
                raise DataError("reference_image: this pipeline has no default reference; pass one")
            image = self.reference_image
        tensor = image_to_tensor(center_crop_resize(image, side)) if isinstance(image, Image.Image) else image
        if tensor.shape[-1] != side:
            tensor = torch.nn.functional.interpolate(tensor[None], size=(side, side), mode="bicubic")[0]
        dist = self.vae.encode(tensor[None].to(self.device, self.vae.dtype)).latent_dist
        return dist.mean * self.vae.config.scaling_factor

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, d) conditions with S_ori injected, and the (1, L, d) empty-prompt states."""
        for prompt in prompts:
            if self.embeddings is not None and self.placeholder not in prompt.split():
                raise DataError(f"prompt {prompt!r}: missing the concept's placeholder {self.placeholder}")
        ids = tokenize(self.tokenizer, prompts, self.device)
        # Without a concept (the base model alone) nothing is injected: plain SD v1.x.
        vectors = self.embeddings.s_ori.expand(len(prompts), -1) if self.embeddings is not None else None
        cond = encode_prompt(self.text_encoder, ids, self.placeholder_id, vectors)
        uncond = self.text_encoder(tokenize(self.tokenizer, [""], self.device))[0]
        return cond, uncond

    def _reference_text(self, prompts: list[str | None], uncond: torch.Tensor) -> torch.Tensor:
        """Text states of the reference rows: the empty prompt's for None, else the prompt's (nothing injected)."""
        distinct = list(dict.fromkeys(p for p in prompts if p is not None))
        encoded = self.text_encoder(tokenize(self.tokenizer, distinct, self.device))[0] if distinct else None
        return torch.cat([uncond if p is None else encoded[distinct.index(p)][None] for p in prompts])

    def _rra_step(
        self,
        reference: torch.Tensor,
        reference_text: torch.Tensor,
        model_input: torch.Tensor,
        text: torch.Tensor,
        t: torch.Tensor,
        fuse: bool,
        reference_index: torch.Tensor | None = None,
        prefix: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """ε̂ of the main rows with RRA: one fused UNet call on [reference; main] rows, or two calls. Main row i
        reads reference row ``reference_index[i]`` (row for row when None) of [``prefix``; ``reference``], where
        ``prefix`` holds reference features computed earlier (the cached unconditional row)."""
        self.bank.clear()
        self.bank.reference_index = reference_index
        self.bank.prefix = prefix or {}
        if fuse:
            self.bank.mode, self.bank.reference_rows = rra.BankMode.FUSED, reference.shape[0]
            out = self.denoiser(torch.cat([reference, model_input]), t, torch.cat([reference_text, text])).sample
            self.bank.clear()
            return out[reference.shape[0] :]
        self.bank.mode = rra.BankMode.WRITE
        self.denoiser(reference, t, reference_text)
        self.bank.mode = rra.BankMode.READ
        out = self.denoiser(model_input, t, text).sample
        self.bank.clear()
        return out

    def enable_compile(self, backend: str | object = "inductor") -> None:
        """Run the UNet through ``torch.compile`` (eager fallback with a warning where compiling fails)."""
        self.denoiser = Denoiser(self.unet, compile=True, backend=backend)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        generator: torch.Generator | list[torch.Generator] | None = None,
        reference_image: Image.Image | torch.Tensor | None = None,
        reference_prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        eta: float = 0.0,
        height: int | None = None,
        reference_noise: ReferenceNoise = ReferenceNoise.CLEAN,
        output_type: str = "pil",
        progress: bool = True,
        fuse_reference: bool = True,
        share_reference_rows: bool = True,
        cache_unconditional_reference: bool = True,
    ) -> EqDiffPipelineOutput:
        """Generate one image per prompt (repeat a prompt for several samples, each with its generator).

        ``reference_prompt``: the reference rows' text (one, or one per prompt); None = the concept's training
        reference prompt (instance prompt without the placeholder, "photo of a toy"), or, where the pipeline
        does not know it, each prompt without the placeholder.

        ``fuse_reference`` runs the reference and main rows in one UNet call per step (the default; same result as
        two calls up to float rounding, faster where small batches are launch-bound). ``share_reference_rows``
        computes each distinct reference row once per batch (``reference_rows``; same result up to float rounding).
        ``cache_unconditional_reference`` (clean, shared reference rows only) computes the unconditional rows'
        reference features once per timestep for the pipeline's lifetime and reuses them in every later call
        (``UnconditionalReferenceCache``): exact, and each image stays the same whether the cache was cold or warm.
        """
        # 1. Check inputs.
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        generators = generator if isinstance(generator, list) else [generator] * len(prompts)
        if len(generators) != len(prompts):
            raise ValueError(f"{len(generators)} generators for {len(prompts)} prompts")
        if reference_prompt is None and self.default_reference_prompt is not None:
            reference_prompts = [self.default_reference_prompt] * len(prompts)
        elif reference_prompt is None:
            reference_prompts = [remove_placeholder(p, self.placeholder) for p in prompts]
        else:
            reference_prompts = (
                [reference_prompt] * len(prompts) if isinstance(reference_prompt, str) else list(reference_prompt)
            )
            if len(reference_prompts) != len(prompts):
                raise ValueError(f"{len(reference_prompts)} reference prompts for {len(prompts)} prompts")
        side = height or self.resolution
        batch = len(prompts)
        # 2. Text: [uncond..., cond...] for the main pass; the reference rows' own (empty or reference prompt).
        cond, uncond = self._text(prompts)
        main_text = torch.cat([uncond.expand(batch, -1, -1), cond])
        if self.use_rra:
            noised = reference_noise == ReferenceNoise.NOISED
            per_image = noised or not share_reference_rows
            rows, index = reference_rows(reference_prompts, per_image=per_image)
            cached = cache_unconditional_reference and not per_image
            if cached:  # row 0 is the unconditional one: it comes from the cache, as a prefix
                rows = rows[1:]
            ref_text = self._reference_text([prompt for _, prompt in rows], uncond)
            row_images = [image for image, _ in rows]
            shared = index != list(range(len(index)))
            ref_index = torch.tensor(index, device=self.device) if shared else None
        # 3. Initial latents, one generator per image.
        latent_side = side // self.vae_scale_factor
        shape = (1, self.unet.config.in_channels, latent_side, latent_side)
        latents = torch.cat(
            [randn_tensor(shape, generator=g, device=self.device, dtype=self.unet.dtype) for g in generators]
        )
        ref_clean = self._reference_latents(reference_image, side).to(self.unet.dtype) if self.use_rra else None
        if self.use_rra and cached:
            self._unconditional_reference.use(ref_clean, uncond)
        ref_noise = None
        if self.use_rra and reference_noise == ReferenceNoise.NOISED:
            ref_noise = torch.cat(
                [randn_tensor(shape, generator=g, device=self.device, dtype=self.unet.dtype) for g in generators]
            )
        # 4. Timesteps, kept on the host: DDIM indexes its (host) alphas with them, which a device timestep would
        # turn into a device-to-host read every step; the UNet moves its timestep itself.
        self.scheduler.set_timesteps(num_inference_steps)
        latents = latents * self.scheduler.init_noise_sigma
        # 5. Denoising loop: reference pass, then the main pass with RRA, then CFG and a DDIM step.
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            model_input = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            if self.use_rra:
                ref = ref_clean.expand(len(rows), -1, -1, -1)
                if ref_noise is not None:
                    ref = self.scheduler.add_noise(ref, ref_noise[row_images], t.expand(len(rows)))
                prefix = self._unconditional_reference.features(self, t) if cached else None
                noise_pred = self._rra_step(ref, ref_text, model_input, main_text, t, fuse_reference, ref_index, prefix)
            else:
                noise_pred = self.denoiser(model_input, t, main_text).sample
            noise_uncond, noise_cond = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generators).prev_sample
        self.bank.clear()
        # 6. Decode.
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return EqDiffPipelineOutput(images=images.cpu())
        arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        return EqDiffPipelineOutput(images=[Image.fromarray(a) for a in arrays])


def image_generator(
    seed: int, prompt_index: int, sample_index: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """The generator of one image, from (seed, prompt index, sample index) alone (docs/method.md, Inference)."""
    key = (seed * 1_000_003 + prompt_index) * 1_009 + sample_index
    return torch.Generator(device=device).manual_seed(key % (2**63))
