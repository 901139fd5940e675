"""Text generation with a decoder's incremental state (KV cache, RNN state, ...).

Sampling is greedy (temperature 0), or temperature sampling optionally
restricted by top-k and/or top-p (nucleus). The prompt is fed in one
`decode_step` call, then one token per step inside a jitted `lax.scan`.
"""

import functools

import jax
import jax.numpy as jnp


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
  """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token while the mass before it is below top_p (the first always stays).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1,
                     keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def sample_token(logits, rng, temperature: float, top_k: int, top_p: float):
  """Next token ids [B] from last-position logits [B, V]."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1)
  logits = filter_logits(logits / temperature, top_k, top_p)
  return jax.random.categorical(rng, logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("merge", "max_new_tokens", "temperature",
                                             "top_k", "top_p"))
def _generate(params, prompt, rng, *, merge, max_new_tokens, temperature, top_k, top_p):
  model = merge(params)
  cache = model.init_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
  logits, cache = model.decode_step(prompt, cache)

  def step(carry, key):
    last_logits, cache = carry
    token = sample_token(last_logits, key, temperature, top_k, top_p)
    logits, cache = model.decode_step(token[:, None].astype(prompt.dtype), cache)
    return (logits[:, -1], cache), token

  _, tokens = jax.lax.scan(step, (logits[:, -1], cache), jax.random.split(rng, max_new_tokens))
  return tokens.T


def generate(merge, params, prompt_ids: list[list[int]], *, max_new_tokens: int, rng,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None) -> list[list[int]]:
  """New token ids for each prompt (prompts of equal length), cut after eos_id.

  `merge(params)` must return the backbone (a hashable callable, e.g. a bound
  method of a frozen dataclass, so the jitted loop is cached).
  """
  prompt = jnp.asarray(prompt_ids, jnp.int32)
  tokens = jax.device_get(_generate(params, prompt, rng, merge=merge,
                                    max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_k=top_k, top_p=top_p))
  out = []
  for row in tokens.tolist():
    if eos_id is not None and eos_id in row:
      row = row[:row.index(eos_id) + 1]
    out.append(row)
  return out


def generate_text(workdir: str, prompts: list[str], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                  seed: int = 0) -> tuple[int, list[str]]:
  """(checkpoint step, continuations) of each prompt from a run's latest checkpoint."""
  import os

  from research import train
  from research.data.tokenizer import Tokenizer
  from research.errors import ConfigError

  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
    raise ConfigError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1")
  cfg, netdef, params, step = train.restore_params(workdir)
  backbone = netdef.merge(params).backbone
  if not backbone.causal or not hasattr(backbone, "decode_step"):
    raise ConfigError(f"model.arch={cfg.model.arch} model.kind={cfg.model.kind} cannot "
                      "generate text: it is not a decoder")
  tokenizer = Tokenizer(os.path.join(workdir, "tokenizer.model"))
  merge = lambda p: netdef.merge(p).backbone
  texts = []
  for text in prompts:
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    if len(ids) + max_new_tokens > cfg.model.max_len:
      raise ConfigError(f"prompt + max_new_tokens = {len(ids) + max_new_tokens} tokens is above "
                        f"model.max_len={cfg.model.max_len}")
    new = generate(merge, params, [ids], max_new_tokens=max_new_tokens,
                   rng=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k,
                   top_p=top_p, eos_id=tokenizer.eos_id)[0]
    texts.append(tokenizer.decode(new))
  return step, texts
