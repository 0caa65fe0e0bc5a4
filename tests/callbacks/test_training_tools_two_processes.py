"""Model summary, gradient norms, SWA and the profiler on two processes (gloo)."""

from ..launching import run_scenario_on_two_processes
from . import tools_distributed_scenario as scenario


def test_the_training_tools_agree_on_two_processes(tmp_path):
    results, output = run_scenario_on_two_processes(scenario.__file__, tmp_path)
    out = tmp_path / "out"  # where the scenario wrote
    first, second = results

    # the summary is of the model, not of DDP's wrapper, and printed once (by the main process)
    assert first["summary"] == second["summary"] == [["0", 8, 8], ["1", 131, 131]]
    assert output.count("Model summary (Sequential)") == 1

    # gradient norms after DDP's averaging: the same on both processes, one per update (8 per epoch)
    assert len(first["grad_norm"]) == 3 * 8
    assert first["grad_norm"] == second["grad_norm"] and first["grad_norm_group"] == second["grad_norm_group"]
    assert first["grad_norm_clipped"] == second["grad_norm_clipped"]
    assert max(first["grad_norm"]) > 0.5 and max(first["grad_norm_clipped"]) <= 0.5 + 1e-5

    # SWA: both processes end with the same averaged weights and BatchNorm statistics
    assert first["n_averaged"] == second["n_averaged"] == 2
    assert first["weights"] == second["weights"]
    assert first["running_mean"] == second["running_mean"]

    # the profiler: one trace per process, side by side in the run folder
    traces = sorted(path.name.split(".")[0] for path in (out / "profiler").glob("*.pt.trace.json"))
    assert traces == ["rank0", "rank1"]
