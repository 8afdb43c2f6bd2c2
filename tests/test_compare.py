"""benchmarks/compare.py (issue 4): a tiny end-to-end run, the function-preserving rescale of the fair-chance
experiment, and the presets of the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RECORD_KEYS = {"method", "target_flops", "seed", "macs_ratio", "acc_dense", "acc_after_reg", "acc_after_surgery",
               "acc_final", "ort_cpu_latency_ratio"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--data", "demo", "--train-limit", "256", "--test-limit", "128", "--dense-epochs", "1",
        "--steps-per-epoch", "2", "--seeds", "0", "--targets", "0.5", "--methods", "catalyst", "l1",
        "--widths", "16", "32", "64", "--fairness-factors", "10", "--fairness-methods", "catalyst", "l1",
        "--latency-batches", "1", "--latency-runs", "3", "--latency-min-time", "0"]


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


@pytest.mark.slow
def test_tiny_comparison_writes_records_plots_and_only_its_results_section(tmp_path, benchmarks_on_path):
    import compare

    other = "<!-- latency:begin -->\nsomeone else's table\n<!-- latency:end -->"
    stale = "<!-- compare:begin -->\nlast run's numbers\n<!-- compare:end -->"
    (tmp_path / "RESULTS.md").write_text(f"# Benchmark results\n\n{stale}\n\n{other}\n")

    assert compare.main(TINY + ["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0

    records = json.loads((tmp_path / "compare.json").read_text())
    assert sorted(r["method"] for r in records) == ["catalyst", "l1"]
    for r in records:
        assert RECORD_KEYS <= set(r) and not r.get("error")
        assert (r["target_flops"], r["seed"]) == (0.5, 0)
        assert 0.2 < r["macs_ratio"] <= 0.5, "surgery reaches the target, measured on the real graph"
        assert all(0 <= r[k] <= 100 for k in ("acc_dense", "acc_after_reg", "acc_after_surgery", "acc_final"))
        assert r["ort_cpu_latency_ratio"] > 0
    assert records[0]["acc_dense"] == records[1]["acc_dense"], "every method starts from the same cached dense model"
    catalyst = next(r for r in records if r["method"] == "catalyst")
    assert 0 <= catalyst["decided_share"] <= 1 and "bifurcation_margin" in catalyst
    assert len(list((tmp_path / "cache").glob("dense_*_s0.pt"))) == 1

    fairness = {(r["setting"], r["method"]): r for r in json.loads((tmp_path / "compare_fairness.json").read_text())}
    assert set(fairness) == {(s, m) for s in ("held", "trainable") for m in ("catalyst", "l1")}
    l1 = fairness["held", "l1"]
    assert l1["share_untouched"] - l1["share_rescaled"] >= 0.3, "L1 keeps the channels scaled up by 10"
    assert abs(fairness["held", "catalyst"]["gap_points"]) < abs(l1["gap_points"])

    for name in ("accuracy_vs_flops.png", "fairness.png", "bifurcation_trajectories.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    results = (tmp_path / "RESULTS.md").read_text()
    assert other in results and "last run's numbers" not in results
    assert results.count("<!-- compare:begin -->") == 1 and "| catalyst | 1 |" in results

    # --reuse: l1's run comes back from the cache, Catalyst's is made again; other settings are never reused
    assert compare.main(TINY + ["--out", str(tmp_path), "--cache", str(tmp_path / "cache"), "--reuse", "l1",
                                "--fairness-methods"]) == 0
    again = {r["method"]: r for r in json.loads((tmp_path / "compare.json").read_text())}
    assert again["l1"]["reused"]["commit"] and "reused" not in again["catalyst"]
    first_l1 = next(r for r in records if r["method"] == "l1")
    assert {k: again["l1"][k] for k in RECORD_KEYS} == {k: first_l1[k] for k in RECORD_KEYS}
    assert "reused from the cache (`--reuse`" in (tmp_path / "RESULTS.md").read_text()
    assert compare.main(TINY + ["--out", str(tmp_path), "--cache", str(tmp_path / "cache"), "--reuse", "l1",
                                "--fairness-methods", "--recover-epochs", "0.5", "--methods", "l1"]) == 0
    assert "reused" not in json.loads((tmp_path / "compare.json").read_text())[0], "a changed budget is rerun"


@pytest.mark.parametrize("factor", [0.1, 10.0])
def test_rescale_preserves_the_function_and_scales_the_chosen_half(benchmarks_on_path, factor):
    from compare_fairness import RESCALED, UNTOUCHED, rescale_half_of_each_group

    from catalyst_deploy.surgery import ChannelGraph
    from catalyst_deploy.zoo import small_resnet

    torch.manual_seed(0)
    model = small_resnet(widths=(16, 32, 64)).train()
    with torch.no_grad():
        for _ in range(5):  # realistic BN running statistics
            model(torch.randn(16, 1, 28, 28))
    model.eval()
    x, example = torch.randn(8, 1, 28, 28), torch.randn(1, 1, 28, 28)
    before = model(x).detach()
    stem_norms = model.stem[0].weight.detach().flatten(1).norm(dim=1)

    code = rescale_half_of_each_group(model, example, factor, seed=1)

    after = model(x).detach()
    assert (after - before).abs().max() <= 1e-2 * before.abs().max()  # BN eps does not scale with k
    graph = ChannelGraph(model, example)
    for g, size in enumerate(graph.sizes):
        group_code = code[graph.offsets[g]:graph.offsets[g + 1]]
        assert int((group_code == RESCALED).sum()) == size // 2
        assert int((group_code == UNTOUCHED).sum()) == size - size // 2
    stem_group = next(g for g in range(len(graph.sizes)) if graph.root_name(g) == "stem.0")
    stem_code = code[graph.offsets[stem_group]:graph.offsets[stem_group + 1]]
    expected = torch.where(stem_code == RESCALED, stem_norms * factor, stem_norms)
    torch.testing.assert_close(model.stem[0].weight.detach().flatten(1).norm(dim=1), expected)


def test_quick_preset_and_explicit_options(benchmarks_on_path):
    from compare import ALL_METHODS, parse_settings

    full, quick = parse_settings([]), parse_settings(["--quick"])
    assert (full.seeds, full.targets, full.methods) == ([0, 1, 2], [0.5, 0.3], ALL_METHODS)
    assert len(quick.seeds) == 1 and quick.train_limit and len(quick.methods) < len(ALL_METHODS)
    override = parse_settings(["--quick", "--seeds", "3", "4", "--targets", "0.3"])
    assert (override.seeds, override.targets, override.quick) == ([3, 4], [0.3], True)
    assert override.command.endswith("--quick --seeds 3 4 --targets 0.3")


def test_schedule_study_transplants_keep_the_counts_or_the_order_they_promise(benchmarks_on_path):
    from schedule_study import per_group, transplant_set

    from catalyst_deploy.config import PruneConfig
    from catalyst_deploy.surgery import ChannelGraph, count_macs
    from catalyst_deploy.zoo import small_resnet

    torch.manual_seed(0)
    model, example = small_resnet(widths=(16, 32, 64)), torch.randn(1, 1, 28, 28)
    graph, macs0 = ChannelGraph(model, example), count_macs(model, example)[0]
    log_c = torch.randn(graph.num_channels)
    source = {"log_c_at_freeze": log_c.tolist(), "pruned_channels": [0, 3]}
    l1 = {"pruned_channels": list(range(0, graph.num_channels, 3))}
    cfg = PruneConfig(model="zoo:small_resnet", round_to=None)

    assert transplant_set("set", source, None, graph, macs0, 0.5, cfg) == [0, 3]
    counts = transplant_set("l1-counts", source, l1, graph, macs0, 0.5, cfg)
    assert per_group(counts, graph.sizes) == per_group(l1["pruned_channels"], graph.sizes)
    chosen = set(counts)
    for idx in torch.arange(graph.num_channels).split(graph.sizes):
        inside = [int(i) for i in idx if int(i) in chosen]
        outside = [int(i) for i in idx if int(i) not in chosen]
        if inside and outside:
            assert min(log_c[inside]) > max(log_c[outside]), "the highest c of each group are the ones taken"
    quantile = transplant_set("group-quantile", source, None, graph, macs0, 0.5, cfg)
    assert 0 < len(quantile) < graph.num_channels and sum(per_group(quantile, graph.sizes)) == len(quantile)
