"""The paper's components: FDTE (fdte), MGDP (mgdp), RRA and the Custom Diffusion processors (rra), and
prompts (the subject slot, the placeholder). Imports only configuration and errors: never training, pipelines,
evaluation or io (docs/architecture.md, Layers).
"""
