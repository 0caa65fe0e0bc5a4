"""Sharded training asked for as accelerate users ask (an FSDP or DeepSpeed plugin in
``accelerator_kwargs``, or the environment ``accelerate launch`` / ``accelerate config`` set):
accelerate's own FSDP2 path made to run on CPU processes too, where accelerate 1.16 drops the plugin
without a word; a plugin that cannot run refused or warned about, naming what runs instead; and the
DeepSpeed config fields the Trainer knows."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from ._warnings import warn_user
from .safe_files import CheckpointError

USE_FSDP_ENV = "ACCELERATE_USE_FSDP"
USE_DEEPSPEED_ENV = "ACCELERATE_USE_DEEPSPEED"
_ENGINE_TYPES = (DistributedType.FSDP, DistributedType.DEEPSPEED)
_ENGINE_NAMES = {DistributedType.FSDP: "FSDP", DistributedType.DEEPSPEED: "DeepSpeed"}


def fsdp_plugin_asked(accelerator_kwargs: dict[str, Any]) -> FullyShardedDataParallelPlugin | None:
    """The FSDP plugin in ``accelerator_kwargs``, else one built from accelerate's environment
    (``ACCELERATE_USE_FSDP=true``, ``FSDP_VERSION``, ...: what ``accelerate launch --use_fsdp`` sets),
    or None."""
    plugin = accelerator_kwargs.get("fsdp_plugin")
    if plugin is None and _flag(USE_FSDP_ENV):
        plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* as accelerate's Accelerator does
    return plugin


def deepspeed_asked(accelerator_kwargs: dict[str, Any]) -> bool:
    """Whether ``accelerator_kwargs`` or accelerate's environment asks for DeepSpeed."""
    plugins = accelerator_kwargs.get("deepspeed_plugin") or accelerator_kwargs.get("deepspeed_plugins")
    return plugins is not None or _flag(USE_DEEPSPEED_ENV)


def reduce_in_fp32(plugin: FullyShardedDataParallelPlugin, mixed_precision: str) -> None:
    """Under bf16/fp16, a plugin without a mixed-precision policy gets parameters gathered in the low
    precision and gradients reduced in fp32, as DDP under autocast reduces them (accelerate's default
    reduces in the low precision). The outputs are returned in fp32 as under DDP too (``_preparation``)."""
    if (
        mixed_precision in ("bf16", "fp16")
        and plugin.fsdp_version == 2
        and plugin.mixed_precision_policy is None
    ):
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy

        low = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)


def check_deepspeed_can_run(accelerator_kwargs: dict[str, Any], several_cpu_processes: bool) -> None:
    """Refuse the DeepSpeed launches accelerate would turn into something else without a word."""
    if not deepspeed_asked(accelerator_kwargs):
        return
    if accelerator_kwargs.get("cpu"):
        raise ValueError(
            "DeepSpeed was asked for with cpu=True, which makes accelerate drop it and train without "
            "DeepSpeed: remove cpu=True (on a machine without a GPU, set DS_ACCELERATOR=cpu), or ask for "
            "FSDP2 instead."
        )
    if several_cpu_processes:
        raise ValueError(
            "DeepSpeed on several CPU processes is not run by accelerate (it would train each process "
            "alone): use FSDP2 there, accelerator_kwargs={'fsdp_plugin': "
            "FullyShardedDataParallelPlugin(fsdp_version=2)}, or DeepSpeed on one CPU process or on GPUs."
        )
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError(
            "DeepSpeed needs a launcher, also for one process (started with plain python it looks for "
            "MPI): run `torchrun --nproc_per_node 1 train.py` (or accelerate launch / deepspeed)."
        )


@contextlib.contextmanager
def environment_kept() -> Iterator[set[str]]:
    """Put ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED`` back as they were:
    ``Accelerator(fsdp_plugin=...)`` sets them for the whole process, and a later Trainer (or a child
    process) would shard without being asked. Yields the set of those the block changed, filled when it
    ends."""
    saved = {name: os.environ.get(name) for name in (USE_FSDP_ENV, USE_DEEPSPEED_ENV)}
    changed: set[str] = set()
    try:
        yield changed
    finally:
        for name, value in saved.items():
            if os.environ.get(name) != value:
                changed.add(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shard_as_asked(
    accelerator, accelerator_kwargs: dict[str, Any], environment_changed: set[str] = frozenset()
) -> None:
    """After the ``Accelerator`` is made: FSDP2 put in place on CPU processes, where accelerate dropped it;
    a plugin that runs nowhere (one process, FSDP1 on CPUs) refused or warned about.

    Args:
        accelerator: the Trainer's.
        accelerator_kwargs: the Trainer's ``accelerator_kwargs``.
        environment_changed: what :func:`environment_kept` saw the ``Accelerator``'s creation set: a
            plugin given to it by an overridden ``create_accelerator`` sets ``ACCELERATE_USE_FSDP``.
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            warn_user(
                "FSDP1 (fsdp_version=1) runs through accelerate here but is not tested with this Trainer; "
                "FSDP2 is: pass FullyShardedDataParallelPlugin(fsdp_version=2) (or FSDP_VERSION=2)."
            )
        return
    plugin = fsdp_plugin_asked(accelerator_kwargs)
    if plugin is None and USE_FSDP_ENV in environment_changed:
        warn_user(
            "The FSDP plugin given to the Accelerator in create_accelerator() is dropped by accelerate on "
            f"this {accelerator.distributed_type.value} run, so the model trains unsharded: pass it in "
            "accelerator_kwargs={'fsdp_plugin': ...} instead, so that the Trainer puts it in place."
        )
    if plugin is None:
        return
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        _shard_cpu_processes(accelerator, plugin)
    elif accelerator.distributed_type == DistributedType.NO:
        warn_user(
            "The FSDP plugin is ignored on one process (accelerate shards only across a launch's "
            "processes): the model trains unsharded. Launch with torchrun --nproc_per_node N (N may be 1 on "
            "one GPU) or accelerate launch to shard it."
        )
    else:
        warn_user(
            f"The FSDP plugin is ignored: this run is {accelerator.distributed_type.value}, "
            "which runs instead."
        )


def _shard_cpu_processes(accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """accelerate 1.16 selects FSDP only for accelerator devices (``AcceleratorState.__init__`` leaves
    MULTI_CPU alone); its FSDP2 code (prepare, no_sync, clipping, state dicts, save_state) is
    device-agnostic, so the state it would have set is set here and the path GPU users run runs on CPU
    processes too. These three attributes are accelerate's internals: ``test_sharding.py`` pins them."""
    if plugin.fsdp_version != 2:
        raise ValueError(
            "FSDP1 does not run on CPU processes (accelerate would train with plain DDP): pass "
            "FullyShardedDataParallelPlugin(fsdp_version=2) (or set FSDP_VERSION=2)."
        )
    _drop_cpu_offload(plugin)
    reduce_in_fp32(plugin, accelerator.mixed_precision)
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)  # what AcceleratorState does on GPUs
    state = accelerator.state
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def _drop_cpu_offload(plugin: FullyShardedDataParallelPlugin) -> None:
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    if isinstance(plugin.cpu_offload, CPUOffloadPolicy):
        warn_user(
            "cpu_offload=True is dropped on CPU processes (the parameters are on the CPU already, and "
            "its pinned memory needs an accelerator): the model is sharded without offloading."
        )
        plugin.cpu_offload = OffloadPolicy()


def sharding_differs(accelerator_kwargs: dict[str, Any]) -> bool:
    """Whether accelerate's process-wide state holds an engine (FSDP, DeepSpeed) or one is asked for:
    either way the next ``Accelerator`` must start from a fresh state (an initialised one ignores new
    plugins)."""
    state = AcceleratorState._shared_state
    engaged = state.get("distributed_type") in _ENGINE_TYPES
    asked = fsdp_plugin_asked(accelerator_kwargs) is not None or deepspeed_asked(accelerator_kwargs)
    return engaged or asked


def restore_process_distributed_type() -> None:
    """Give accelerate's process state back the type its launch has (MULTI_CPU, MULTI_GPU, ...) where
    an engine replaced it: a new ``AcceleratorState`` starts from it, and would keep FSDP without a plugin."""
    process = PartialState._shared_state
    if process.get("distributed_type") not in _ENGINE_TYPES:
        return
    if process.get("backend") is None:
        process["distributed_type"] = DistributedType.NO
    else:
        device_type = process["device"].type
        process["distributed_type"] = DistributedType(
            f"MULTI_{'GPU' if device_type == 'cuda' else device_type.upper()}"
        )


def forwards_are_collective(accelerator) -> bool:
    """Whether every forward gathers parameters from every process (FSDP; also under ``no_grad``): then
    every process must run as many forwards as the others, or they wait for each other forever."""
    return accelerator.distributed_type == DistributedType.FSDP and accelerator.num_processes > 1


def engine_steps_in_backward(accelerator) -> bool:
    """Whether the update runs inside the backward of a window's last batch (DeepSpeed's engine)."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def fill_deepspeed_config(
    accelerator, per_device_batch_size: int, accumulation_steps: int, clip_norm
) -> None:
    """Fill the DeepSpeed config's ``"auto"`` fields the Trainer knows, as the HF Trainer does; an
    explicit value that contradicts the Trainer's argument is an error naming both."""
    plugin = accelerator.state.deepspeed_plugin
    known = {
        "train_micro_batch_size_per_gpu": per_device_batch_size,
        "gradient_accumulation_steps": accumulation_steps,
        "gradient_clipping": 0.0 if clip_norm is None else float(clip_norm),  # off, not "auto"'s 1.0
    }
    for key, value in known.items():
        if plugin.is_auto(key) or key not in plugin.deepspeed_config:
            plugin.deepspeed_config[key] = value
        elif key != "gradient_clipping" or clip_norm is not None:
            _check_matches(key, plugin.deepspeed_config[key], value)


def _check_matches(key: str, configured, value) -> None:
    if float(configured) != float(value):
        argument = {
            "train_micro_batch_size_per_gpu": "per_device_batch_size",
            "gradient_accumulation_steps": "gradient_accumulation_steps",
            "gradient_clipping": "gradient_clip_norm",
        }[key]
        raise ValueError(
            f"The DeepSpeed config sets {key}={configured!r} but train() was given {argument}={value!r}: "
            f"set one of them to agree, or {key!r} to 'auto' so that the Trainer fills it."
        )


def check_train_arguments(accelerator, gradient_clip_value, resume_from) -> None:
    """``train()``'s arguments that a sharded model cannot honour, refused before anything is set up."""
    engine = _ENGINE_NAMES.get(accelerator.distributed_type)
    if engine is None:
        return
    if gradient_clip_value is not None:
        raise ValueError(
            f"gradient_clip_value is not supported under {engine} (accelerate clips only by norm there): "
            "pass gradient_clip_norm instead."
        )
    if resume_from is not None:
        check_training_state_supported(accelerator)


def refuse_items_under_deepspeed() -> None:
    """``num_items_in_batch`` divides the gradients after the window's backward: DeepSpeed has updated."""
    raise ValueError(
        "num_items_in_batch is not supported under DeepSpeed: its engine updates the parameters inside "
        "the backward of a window's last batch, before the trainer could divide the gradients by the "
        "window's items. Return the mean loss without num_items_in_batch."
    )


def check_training_state_supported(accelerator) -> None:
    """Refuse ``save_training_state`` and ``resume_from`` for the sharded models they cannot save
    (FSDP1, DeepSpeed), naming what saves them; FSDP2's are saved with torch.distributed.checkpoint."""
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise CheckpointError(
            "Training states of FSDP1 models are not supported: use FSDP2 (fsdp_version=2), whose "
            "training states every process writes with torch.distributed.checkpoint, or save and load with "
            "trainer.accelerator.save_state(folder) / trainer.accelerator.load_state(folder), which hold "
            "no position: train(resume_from=...) cannot continue from them."
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise CheckpointError(
            "Training states of DeepSpeed runs are not supported: DeepSpeed keeps the optimizer in its own "
            "format. Use trainer.accelerator.save_state(folder) / trainer.accelerator.load_state(folder) "
            "(DeepSpeed's checkpoints, loaded with pickle: load only your own), and "
            "trainer.save_checkpoint(path, save_optimizer=False) for the full weights. "
            "train(resume_from=...) cannot continue from them."
        )


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"  # as accelerate reads them
