"""Published Gemma Flax layout and our Orbax format: round trips and clear errors.

The published checkpoint is written here by hand (independently of save_flax) in
the layout the gemma library calls FLAT: {'transformer/layer_0/attn/q_einsum':
{'w': ...}, ...}, gating_einsum (2, F, D) for Gemma 2/3 and (2, D, F) for Gemma 1.
"""
import numpy as np
import orbax.checkpoint as ocp
import pytest

import ckpt_helpers as h
from score_jax.models.checkpoints import (CheckpointError, load_flax, load_orbax,
                                          load_params, save_flax, save_orbax)
from score_jax.models.checkpoints.flax_format import to_flax_tree


def _published_tree(cfg, params) -> dict:
  """Hand-written published layout of our params."""
  p = h.host(params)
  gen3 = cfg.use_qk_norm
  gen2 = cfg.use_post_attn_norm
  tree = {'transformer/embedder': {'input_embedding': p['embedder/input_embedding']},
          'transformer/final_norm': {'scale': p['final_norm/scale']}}
  for l in range(cfg.num_layers):
    pre = f'transformer/layer_{l}/'
    c = np.ascontiguousarray
    if cfg.num_heads == cfg.num_kv_heads:  # ours (D, 3, N, H), published (3, N, D, H)
      tree[pre + 'attn/qkv_einsum'] = {
          'w': c(p['layers/attn/qkv_einsum/w'][l].transpose(1, 2, 0, 3))}
    else:  # ours q (D, N, H), kv (D, 2, K, H); published (N, D, H), (2, K, D, H)
      tree[pre + 'attn/q_einsum'] = {'w': c(p['layers/attn/q_einsum/w'][l].transpose(1, 0, 2))}
      tree[pre + 'attn/kv_einsum'] = {
          'w': c(p['layers/attn/kv_einsum/w'][l].transpose(1, 2, 0, 3))}
    tree[pre + 'attn/attn_vec_einsum'] = {'w': p['layers/attn/attn_vec_einsum/w'][l]}
    gating = p['layers/mlp/gating_einsum'][l]  # (D, 2, F); published (2, F, D) / Gemma 1 (2, D, F)
    tree[pre + 'mlp/gating_einsum'] = {
        'w': c(gating.transpose(1, 2, 0)) if gen2 else c(gating.transpose(1, 0, 2))}
    tree[pre + 'mlp/linear'] = {'w': p['layers/mlp/linear'][l]}
    norms = ['pre_attention_norm', 'pre_ffw_norm']
    norms += ['post_attention_norm', 'post_ffw_norm'] if gen2 else []
    for norm in norms:
      tree[pre + norm] = {'scale': p[f'layers/{norm}/scale'][l]}
    if gen3:
      tree[pre + 'attn/_query_norm'] = {'scale': p['layers/attn/_query_norm/scale'][l]}
      tree[pre + 'attn/_key_norm'] = {'scale': p['layers/attn/_key_norm/scale'][l]}
  return tree


def _write(path, tree):
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, tree)
  return path


@pytest.mark.parametrize('name', list(h.CONFIGS))
def test_published_layout_round_trip(tmp_path, name):
  cfg = h.CONFIGS[name]
  params = h.random_params(cfg)
  expected = h.logits(cfg, params)
  tree = _published_tree(cfg, params)
  path = _write(tmp_path / 'published', tree)
  got = load_params(path, cfg)  # format detected: 'flax'
  np.testing.assert_allclose(h.logits(cfg, got), expected, atol=1e-5, rtol=0)
  # Our exporter writes exactly the hand-written layout.
  ours = to_flax_tree(cfg, params)
  assert sorted(ours) == sorted(tree)
  for module, leaves in tree.items():
    for leaf, value in leaves.items():
      np.testing.assert_array_equal(ours[module][leaf], value, err_msg=f'{module}/{leaf}')


def test_nested_layout_and_vision_keys_are_read(tmp_path):
  """The gemma library's NESTED form ({'transformer': {'layer_0': ...}}, mlp leaves
  without 'w') reads the same; SigLIP and mm_* embedder keys are ignored."""
  cfg = h.CONFIGS['gemma3']
  params = h.random_params(cfg)
  flat = _published_tree(cfg, params)
  nested = {}
  for module, leaves in flat.items():
    node = nested
    for part in module.split('/'):
      node = node.setdefault(part, {})
    if module.endswith(('mlp/gating_einsum', 'mlp/linear')):
      *parents, last = module.split('/')
      parent = nested
      for part in parents:
        parent = parent[part]
      parent[last] = leaves['w']
    else:
      node.update(leaves)
  nested['transformer']['embedder']['mm_input_projection'] = {'w': np.zeros((3, 64), np.float32)}
  nested['SigLiPFromPatches_0'] = {'siglip_encoder': {'w': np.zeros((2, 2), np.float32)}}
  path = _write(tmp_path / 'nested', nested)
  np.testing.assert_allclose(h.logits(cfg, load_flax(path, cfg)), h.logits(cfg, params),
                             atol=1e-5, rtol=0)


def test_save_flax_then_load(tmp_path):
  cfg = h.CONFIGS['gemma2']
  params = h.random_params(cfg)
  path = save_flax(tmp_path / 'flax', cfg, params)
  np.testing.assert_allclose(h.logits(cfg, load_flax(path, cfg)), h.logits(cfg, params),
                             atol=1e-5, rtol=0)


def test_orbax_round_trip_and_bfloat16(tmp_path):
  cfg = h.CONFIGS['gemma3']
  params = h.random_params(cfg)
  path = save_orbax(tmp_path / 'ours', params)
  got = load_params(path, cfg)  # format detected: 'orbax'
  np.testing.assert_allclose(h.logits(cfg, got), h.logits(cfg, params), atol=1e-5, rtol=0)
  bf16 = load_orbax(path, cfg.replace(param_dtype='bfloat16'))
  leaf = bf16['embedder']['input_embedding'].get_value()
  assert str(leaf.dtype) == 'bfloat16'


def test_wrong_preset_names_file_key_and_shapes(tmp_path):
  cfg = h.CONFIGS['gemma2']
  path = _write(tmp_path / 'g2', _published_tree(cfg, h.random_params(cfg)))
  with pytest.raises(CheckpointError) as e:
    load_flax(path, h.CONFIGS['gemma3'])
  msg = str(e.value)
  # gemma2_tiny has 4 layers and no qk-norm: 4 layers x 2 qk norms + 2 layers x 11.
  assert str(path) in msg and "preset 'gemma3_tiny'" in msg
  assert '0 wrong shape(s), 30 missing key(s), 0 unexpected' in msg
  assert "'transformer/layer_0/attn/_key_norm/scale' missing (expected shape (16,))" in msg


def test_wrong_shape_and_missing_key(tmp_path):
  cfg = h.CONFIGS['gemma_mqa']
  tree = _published_tree(cfg, h.random_params(cfg))
  tree['transformer/layer_1/mlp/linear']['w'] = np.zeros((64, 128), np.float32)
  del tree['transformer/final_norm']
  path = _write(tmp_path / 'bad', tree)
  with pytest.raises(CheckpointError) as e:
    load_flax(path, cfg)
  msg = str(e.value)
  assert ("key 'transformer/layer_1/mlp/linear/w' has shape (64, 128); expected (128, 64)"
          in msg)
  assert "key 'transformer/final_norm/scale' missing (expected shape (64,))" in msg


def test_orbax_mismatch_is_clear(tmp_path):
  path = save_orbax(tmp_path / 'ours', h.random_params(h.CONFIGS['gemma_mqa']))
  with pytest.raises(CheckpointError, match=r"'layers/attn/qkv_einsum/w' missing"):
    load_orbax(path, h.CONFIGS['gemma_mha'])
