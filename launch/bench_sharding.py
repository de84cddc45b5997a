"""Sharding strategies compared on the SCoRe train step and on sampling.

For every strategy (--strategies) and model preset (--presets):
  train   the jitted SCoRe step (policy forward + backward, reference forward,
          Stage I/II loss, AdamW update; training.step.compile_step): AOT compile
          time, then the median of --steps calls after --warmup;
  sample  Sampler.rollout (prefill x, decode y1, append the correction chunk,
          decode y2, pack) on the strategy's sampling copy of the weights
          (Experiment.for_sampling): first call (incl. compiles) and the median.
Reports tokens/s per device, model FLOPs per step, achieved FLOP/s per device
and MFU against the device's dense bf16 peak (TPU v4/v5e/v5p/v6e, H100, H200,
A100; none on CPU; --peak_tflops overrides), and per-device memory from the
compiled train step's memory_analysis() (argument / output / temp / peak).

Model FLOPs (PaLM, appendix B; N = parameter count with the tied embedding
counted once, as the output projection; its input lookup costs nothing):
  train step, B rows of T tokens:
      8 N B T                    6 N B T policy forward + backward, 2 N B T reference
    + 16 L B T^2 n_heads h       attention (QK^T and PV), fwd 4 L B T^2 n h; policy x3
                                 (fwd + bwd), reference x1; full T x T, as computed
  rollout, S = P + M1 + C + M2 cache slots, every processed token attends over S:
      (2 N + 4 L S n_heads h) B (P + C + d1 + d2)    d1, d2: decode steps run
Tokens: train counts B T per step; sampling counts the generated tokens.

  python launch/bench_sharding.py --cpu_devices=8 --out=bench.json --markdown=bench.md
  python launch/bench_sharding.py --presets=gemma3_1b --dtype=bfloat16 \
      --param_dtype=bfloat16 --batch=64 --prompt_len=256 --max_tokens=256
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
import types

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

STRATEGIES = flags.DEFINE_list(
    'strategies', 'dp,fsdp,tp,fsdp_tp,fsdp_sample_replicated',
    'Strategies of score_jax.training.sharding.STRATEGIES.')
PRESETS = flags.DEFINE_list('presets', 'gemma3_tiny,gemma3_100m', 'Model presets.')
MESH_SHAPE = flags.DEFINE_list('mesh_shape', None,
                               'Override every strategy\'s (data, fsdp, tensor) shape.')
BATCH = flags.DEFINE_integer('batch', 8, 'Rows per train step = prompts per rollout.')
PROMPT_LEN = flags.DEFINE_integer('prompt_len', 32, 'P: prompt tokens.')
MAX_TOKENS = flags.DEFINE_integer('max_tokens', 16, 'M1 = M2: tokens per turn.')
CHUNK_LEN = flags.DEFINE_integer('chunk_len', 8, 'C: tokens of the correction chunk.')
STAGE = flags.DEFINE_enum('stage', 'stage1', ['stage1', 'stage2'], 'Loss of the step.')
KL = flags.DEFINE_enum('kl_estimator', 'exact', ['exact', 'k1', 'k3'], 'KL estimator.')
DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
PARAM_DTYPE = flags.DEFINE_enum('param_dtype', 'float32', ['float32', 'bfloat16'],
                                'Parameter (and AdamW moment) dtype.')
REMAT = flags.DEFINE_string('remat', 'none', 'ModelConfig.remat policy.')
CONSTRAIN = flags.DEFINE_bool('constrain_activations', False,
                              'Constrain x_BTD at layer boundaries (activation_sharding).')
STEPS = flags.DEFINE_integer('steps', 3, 'Timed calls (the median is reported).')
WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls after the first.')
SAMPLE = flags.DEFINE_bool('sample', True, 'Also benchmark Sampler.rollout.')
CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'Force this many CPU devices (sets XLA_FLAGS; CPU runs only).')
PEAK = flags.DEFINE_float('peak_tflops', None, 'Dense peak TFLOP/s per device (override).')
MAX_HOST_GIB = flags.DEFINE_float(
    'max_host_gib', None, 'CPU only: skip running a case whose compiled footprint, '
    'summed over the forced devices, exceeds this (default: 60% of MemAvailable).')
OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')
MARKDOWN = flags.DEFINE_string('markdown', None, 'Write the markdown table here.')

# Dense bf16 peak FLOP/s per JAX device, by a lowercase substring of device_kind
# (first match wins; order matters).
PEAK_FLOPS = (
    ('v6 lite', 918e12), ('v6e', 918e12), ('v5 lite', 197e12), ('v5e', 197e12),
    ('v5p', 459e12), ('tpu v5', 459e12), ('tpu v4', 275e12),
    ('h100 pcie', 756e12), ('h100 nvl', 835e12), ('h100', 989e12), ('h200', 989e12),
    ('gh200', 989e12), ('a100', 312e12),
)


def peak_flops(device) -> float | None:
  if PEAK.value:
    return PEAK.value * 1e12
  if device.platform == 'cpu':
    return None
  kind = device.device_kind.lower()
  return next((f for key, f in PEAK_FLOPS if key in kind), None)


def train_flops(n_params: int, cfg, b: int, t: int) -> float:
  return 8 * n_params * b * t + 16 * cfg.num_layers * b * t * t * cfg.num_heads * cfg.head_dim


def sample_flops(n_params: int, cfg, b: int, slots: int, tokens_per_row: int) -> float:
  per_token = 2 * n_params + 4 * cfg.num_layers * slots * cfg.num_heads * cfg.head_dim
  return per_token * b * tokens_per_row


def _median_time(fn, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _host_limit_bytes() -> float:
  if MAX_HOST_GIB.value is not None:
    return MAX_HOST_GIB.value * 2**30
  with open('/proc/meminfo') as f:
    avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith('MemAvailable'))
  return 0.6 * avail


def _random_batch(rng, cfg, b: int, p: int, m: int, c: int):
  """A host ScoreBatch of B random traces [x (P), y1 (M), chunk (C), y2 (M)]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from score_jax.batches import ScoreBatch  # pylint: disable=g-import-not-at-top
  t = p + m + c + m
  pos = np.arange(t)[None, :]
  return ScoreBatch(
      tokens_BT=rng.randint(1, cfg.vocab_size, (b, t)).astype(np.int32),
      valid_BT=np.ones((b, t), bool),
      y1_mask_BT=np.broadcast_to((pos >= p) & (pos < p + m), (b, t)),
      y2_mask_BT=np.broadcast_to(pos >= p + m + c, (b, t)),
      r1_B=rng.randint(0, 2, b).astype(np.float32),
      r2_B=rng.randint(0, 2, b).astype(np.float32))


def _build_case(preset: str, strategy_name: str) -> types.SimpleNamespace:
  """Model shapes, mesh, shardings, optimizer, global batch and jitted step of a case."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from score_jax import losses  # pylint: disable=g-import-not-at-top
  from score_jax.models import Transformer, get_preset  # pylint: disable=g-import-not-at-top
  from score_jax.training import sharding as sh  # pylint: disable=g-import-not-at-top
  from score_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from score_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  cfg = get_preset(preset, dtype=DTYPE.value, param_dtype=PARAM_DTYPE.value,
                   remat=REMAT.value)
  shape = tuple(int(s) for s in MESH_SHAPE.value) if MESH_SHAPE.value else None
  strategy = sh.get_strategy(strategy_name, shape)
  mesh = sh.make_mesh(strategy.mesh_shape)
  b, p, m, c = BATCH.value, PROMPT_LEN.value, MAX_TOKENS.value, CHUNK_LEN.value
  t = p + m + c + m
  row = dict(preset=preset, strategy=strategy_name, mesh=dict(mesh.shape), devices=mesh.size,
             device_kind=jax.devices()[0].device_kind, dtype=cfg.dtype,
             param_dtype=cfg.param_dtype, batch=b, trace_len=t)

  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  row['params'] = sum(x.size for x in jax.tree.leaves(abstract))
  p_shard = sh.param_shardings(abstract, strategy.rules, mesh)
  tx = state_lib.make_optimizer(state_lib.OptimConfig())
  shardings = state_lib.state_shardings(abstract, tx, mesh, strategy.rules)
  rng = np.random.RandomState(0)   # the sampler's prompts come after the batch from it
  batch = sh.host_local_batch_to_global(_random_batch(rng, cfg, b, p, m, c), mesh,
                                        strategy.rules)
  act = (sh.activation_sharding(mesh, strategy.rules, (b, t, cfg.embed_dim))
         if CONSTRAIN.value else None)
  loss_cfg = losses.LossConfig(kl_estimator=KL.value, baseline='batch_mean',
                               samples_per_prompt=1)
  step = step_lib.compile_step(graphdef, tx, loss_cfg, STAGE.value, mesh, strategy.rules,
                               shardings, p_shard, batch, activation_sharding=act)
  return types.SimpleNamespace(
      cfg=cfg, strategy=strategy, mesh=mesh, b=b, p=p, m=m, c=c, t=t, row=row,
      graphdef=graphdef, abstract=abstract, p_shard=p_shard, tx=tx, shardings=shardings,
      rng=rng, batch=batch, step=step)


def _with_shardings(tree, shard_tree):
  """ShapeDtypeStructs of `tree`'s leaves, each with its sharding from `shard_tree`."""
  import jax  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(tree)
  return treedef.unflatten([jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
                            for x, s in zip(leaves, jax.tree.leaves(shard_tree))])


def _compile_train_step(case):
  """The AOT-compiled train step; records train_compile_s."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  # Compile from shapes alone, so the memory check comes before any allocation.
  abstract_state = _with_shardings(jax.eval_shape(
      lambda prm: state_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32),
                                       params=prm, opt_state=case.tx.init(prm),
                                       rng=jax.random.key_data(jax.random.key(0))),
      case.abstract), case.shardings)
  abstract_ref = _with_shardings(case.abstract, case.p_shard)
  t0 = time.perf_counter()
  compiled = case.step.lower(abstract_state, abstract_ref, case.batch).compile()
  case.row['train_compile_s'] = time.perf_counter() - t0
  return compiled


def _read_memory_and_cost(case, compiled) -> None:
  """Records the compiled step's per-device memory, XLA FLOPs and the model FLOPs."""
  row = case.row
  mem = compiled.memory_analysis()
  if mem is not None:
    for k in ('argument', 'output', 'alias', 'temp'):
      row[f'train_{k}_mib'] = getattr(mem, f'{k}_size_in_bytes') / 2**20
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes
             - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
    row['train_peak_mib'] = max(getattr(mem, 'peak_memory_in_bytes', 0), total) / 2**20
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and 'flops' in cost:   # XLA's count: a scanned layer's body counts once
    row['xla_flops_per_device'] = float(cost['flops'])
  row['model_flops_train'] = train_flops(row['params'], case.cfg, case.b, case.t)


def _host_memory_shortfall(case, device) -> str | None:
  """Why a forced-CPU case would not fit in host memory, or None when it fits."""
  row, n_dev = case.row, case.mesh.size
  if device.platform != 'cpu' or not row.get('train_peak_mib'):
    return None
  need = row['train_peak_mib'] * 2**20 * n_dev
  if need <= _host_limit_bytes():
    return None
  return (f'needs ~{need / 2**30:.1f} GiB of host memory over {n_dev} '
          'forced CPU devices (--max_host_gib)')


def _time_train_step(case, compiled, peak_f):
  """Records the median train-step time, tokens/s, TFLOP/s and MFU; returns the params."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from score_jax.models import Transformer  # pylint: disable=g-import-not-at-top
  from score_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  row, n_dev = case.row, case.mesh.size

  def init_params():
    return nnx.split(Transformer(case.cfg, rngs=nnx.Rngs(0)))[1]
  params = jax.jit(init_params, out_shardings=case.p_shard)()
  state = state_lib.init_train_state(params, case.tx, jax.random.key(0), case.shardings)
  holder = {'state': state}

  def train_once():
    holder['state'], metrics = compiled(holder['state'], params, case.batch)
    jax.block_until_ready(metrics)
  train_once()   # first real call (allocations), untimed
  step_s = _median_time(train_once, STEPS.value, WARMUP.value)
  row['train_step_s'] = step_s
  row['train_tokens_per_s_per_device'] = case.b * case.t / step_s / n_dev
  row['train_tflops_per_device'] = row['model_flops_train'] / step_s / n_dev / 1e12
  if peak_f:
    row['train_mfu'] = row['train_tflops_per_device'] * 1e12 / peak_f
  del holder, state   # free the train state before sampling
  gc.collect()
  return params


def _time_sampler(case, params, peak_f) -> None:
  """Records Sampler.rollout's first-call and median times, tokens/s, TFLOP/s and MFU."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from score_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top
  from score_jax.training import sharding as sh  # pylint: disable=g-import-not-at-top
  row, cfg, rng, n_dev = case.row, case.cfg, case.rng, case.mesh.size
  b, p, m, c = case.b, case.p, case.m, case.c
  sample_rules = case.strategy.sample_rules or case.strategy.rules
  sample_params = sh.to_process_local(params, case.mesh, sample_rules)
  row['sample_param_mib_per_device'] = max(
      sh.bytes_per_device(sample_params).values()) / 2**20
  sampler = Sampler(case.graphdef, SamplingConfig(
      stop_ids=(cfg.vocab_size - 1,), pad_id=0, temperature=1.0, max_y1_tokens=m,
      max_y2_tokens=m, prompt_buckets=(p,)))
  prompts = rng.randint(2, cfg.vocab_size - 1, (b, p)).astype(np.int32)
  mask = np.ones((b, p), bool)
  chunk = rng.randint(2, cfg.vocab_size - 1, (c,)).astype(np.int32)
  out = {}

  def sample_once():
    out['trace'] = sampler.rollout(sample_params, prompts, mask, chunk,
                                   jax.random.key(1))
    jax.block_until_ready(out['trace'])
  t0 = time.perf_counter()
  sample_once()
  first = time.perf_counter() - t0
  sample_s = _median_time(sample_once, STEPS.value, WARMUP.value)
  tr = out['trace']
  d1, d2 = int(np.max(tr.y1_len_B)), int(np.max(tr.y2_len_B))
  generated = int(np.sum(tr.y1_len_B) + np.sum(tr.y2_len_B))
  row['sample_first_call_s'] = first
  row['sample_s'] = sample_s
  row['sample_tokens_per_s_per_device'] = generated / sample_s / n_dev
  row['model_flops_sample'] = sample_flops(row['params'], cfg, b, p + 2 * m + c,
                                           p + c + d1 + d2)
  row['sample_tflops_per_device'] = row['model_flops_sample'] / sample_s / n_dev / 1e12
  if peak_f:
    row['sample_mfu'] = row['sample_tflops_per_device'] * 1e12 / peak_f


def bench_case(preset: str, strategy_name: str) -> dict:
  """One result row: a preset's train step (and sampler) under a sharding strategy."""
  import jax  # pylint: disable=g-import-not-at-top
  case = _build_case(preset, strategy_name)
  compiled = _compile_train_step(case)
  _read_memory_and_cost(case, compiled)
  device = jax.devices()[0]
  shortfall = _host_memory_shortfall(case, device)
  if shortfall:
    case.row['skipped'] = shortfall
    return case.row
  peak_f = peak_flops(device)
  params = _time_train_step(case, compiled, peak_f)
  if SAMPLE.value:
    _time_sampler(case, params, peak_f)
  return case.row


def _fmt(v, spec='.3g'):
  return '-' if v is None else format(v, spec)


def _mib(v):
  return '-' if v is None else (f'{v:.0f}' if v >= 10 else f'{v:.2g}')


def markdown(rows: list[dict]) -> str:
  head = ('| preset | strategy | mesh (d,f,t) | train compile s | train step s | '
          'train tok/s/dev | train TFLOP/step | TFLOP/s/dev | MFU | '
          'arg / out / temp MiB/dev | sample 1st call s | sample s | sample tok/s/dev | '
          'sample TFLOP/s/dev | sample weights MiB/dev |')
  lines = [head, '|' + '|'.join(['---'] * (head.count('|') - 1)) + '|']
  for r in rows:
    mesh = ','.join(str(v) for v in r['mesh'].values())
    mem = ' / '.join(_mib(r.get(f'train_{k}_mib')) for k in ('argument', 'output', 'temp'))
    mfu = r.get('train_mfu')
    cells = [r['preset'], r['strategy'], mesh, _fmt(r.get('train_compile_s'), '.1f'),
             _fmt(r.get('train_step_s')), _fmt(r.get('train_tokens_per_s_per_device')),
             _fmt(r.get('model_flops_train', 0) / 1e12),
             _fmt(r.get('train_tflops_per_device')),
             '-' if mfu is None else f'{100 * mfu:.1f}%', mem,
             _fmt(r.get('sample_first_call_s'), '.1f'), _fmt(r.get('sample_s')),
             _fmt(r.get('sample_tokens_per_s_per_device')),
             _fmt(r.get('sample_tflops_per_device')),
             _mib(r.get('sample_param_mib_per_device'))]
    if 'skipped' in r:
      cells[4] = 'skipped: ' + r['skipped']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if CPU_DEVICES.value:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={CPU_DEVICES.value}')
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_compilation_cache', False)   # measure real compiles
  from score_jax.training import sharding as sh  # pylint: disable=g-import-not-at-top
  unknown = [s for s in STRATEGIES.value if s not in sh.STRATEGIES]
  if unknown:
    raise app.UsageError(f'--strategies: unknown {unknown}; expected some of '
                         f'{sorted(sh.STRATEGIES)}')
  rows = []
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}; batch {BATCH.value}, '
        f'P={PROMPT_LEN.value} M={MAX_TOKENS.value} C={CHUNK_LEN.value}, '
        f'{DTYPE.value} compute / {PARAM_DTYPE.value} params', flush=True)
  for preset in PRESETS.value:
    for name in STRATEGIES.value:
      try:
        row = bench_case(preset, name)
      except Exception as e:  # pylint: disable=broad-except
        row = dict(preset=preset, strategy=name, mesh={}, error=f'{type(e).__name__}: {e}')
        print(f'{preset} {name}: {row["error"]}', flush=True)
      rows.append(row)
      print(json.dumps(row, default=str), flush=True)
      jax.clear_caches()
      gc.collect()
  table = markdown([r for r in rows if 'error' not in r])
  print(table)
  if OUT.value:
    with open(OUT.value, 'w') as f:
      json.dump(rows, f, indent=1, default=str)
  if MARKDOWN.value:
    with open(MARKDOWN.value, 'w') as f:
      f.write(table + '\n')


if __name__ == '__main__':
  app.run(main)
