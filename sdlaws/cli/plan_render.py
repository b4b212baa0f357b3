"""Text output of ``sdlaws plan``: the plan set's tables, engine flags, interval notes and warnings, in the
table, CSV or markdown format of :class:`sdlaws.cli.output.Output`."""

from __future__ import annotations

def _ci(value, lo=None, hi=None) -> str:
    """'value [lo, hi]', or just the value when there is no interval."""
    from sdlaws.formatting import fmt

    return fmt(value) if lo is None or lo != lo else f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def render(plan_set, flags, out_dir, fmt: str) -> None:
    """Every part present in the plan set (tables, engine flags), then interval notes and warnings."""
    from sdlaws.cli.output import Output
    from sdlaws.formatting import fmt as num

    out = Output(fmt)
    out.text(plan_set.title, style="bold")
    out.text(plan_set.inputs["cost_model"]["statement"])
    if plan_set.inputs.get("acceptance_source"):
        out.text(f"Acceptance: {plan_set.inputs['acceptance_source']}")
    if "serving" in plan_set.inputs and plan_set.inputs["cost_model"]["kind"] == "roofline":
        out.text(_roofline_line(plan_set.inputs["serving"]))
    for key in ("draft_size_objectives", "served_draft"):  # which of the two draft-size optima is served
        if plan_set.inputs.get(key):
            out.text(plan_set.inputs[key])
    for plan in (p for p in plan_set.select("draft_params") if "SDSL" in p.objective):
        for line in plan.summary().splitlines():
            out.text(line)
    t = plan_set.tables
    if "draft_size_vs_target" in t:
        out.table("SDSL N* versus target size M (objective: tokens per FLOP; 95% interval)",
                  ["target M", "N*", "N*/M", "num_spec_tokens", "alpha", "speedup", "mu*M+M0 [S]"],
                  [[num(r.target_params), _ci(r.draft_params, r.draft_params_lower, r.draft_params_upper),
                    num(r.draft_to_target), num(r.num_spec_tokens), num(r.alpha), num(r.speedup),
                    num(r.sdsl_shortcut_params)] for r in t["draft_size_vs_target"].itertuples()])
    if "draft_size_by_batch" in t:
        out.table("Roofline N* per batch size (objective: tokens/s)", ["batch", "N*", "num_spec_tokens", "speedup"],
                  [[num(r.batch_size), _ci(r.draft_params, r.draft_params_lower, r.draft_params_upper),
                    num(r.num_spec_tokens), num(r.speedup)] for r in t["draft_size_by_batch"].itertuples()])
    if "serving" in t:
        cost = "step-time law" if plan_set.inputs["cost_model"]["kind"] == "steptime" else "roofline"
        out.table(*_serving_table(t["serving"], cost))
    if "engine_serving" in t:
        out.table(*_engine_table(t["engine_serving"]))
    if flags is not None:
        for engine, column in (("vLLM (chain draft)", "vllm"), ("SGLang (tree draft)", "sglang")):
            out.text(f"{engine} flags by batch size", style="bold")
            for batches, flag in _grouped(flags, column):
                out.text(f"  batch {batches}: {flag}")
    pre = plan_set.select("draft_pretrain_tokens")
    if pre:
        out.table(*_pretraining_table(pre))
    for kind in dict.fromkeys(p.ci_kind for p in plan_set.plans):
        out.text(f"interval: {kind}")
    for warning in plan_set.warnings:
        out.text(f"warning: {warning}", style="yellow")
    if out_dir is not None:
        out.text(f"wrote {out_dir / 'plan.json'} and figures to {out_dir}")


def _roofline_line(serving: dict) -> str:
    """One line stating the roofline's assumptions: hardware, efficiencies, launch cost, ridge point, context."""
    from sdlaws.hardware import Hardware

    hw = Hardware.from_dict(serving["hardware"])
    return (f"Roofline: {hw.name} ({hw.source}); efficiency FLOP/s {hw.flops_efficiency:.2f}, HBM "
            f"{hw.hbm_efficiency:.2f}; {hw.launch_overhead_s * 1e6:.1f} us per kernel; ridge point "
            f"{hw.machine_balance_flops_per_byte:.0f} FLOP/byte; {serving['dtype']}, context {serving['kv_len']} "
            f"tokens, tp={serving['tp']}")


def _grouped(flags, column: str) -> list[tuple[str, str]]:
    """Consecutive batch sizes sharing a flag string, as ("1-16", flag) pairs."""
    groups: list[list] = []
    for r in flags.itertuples():
        flag = getattr(r, column)
        if groups and groups[-1][1] == flag:
            groups[-1][0].append(r.batch_size)
        else:
            groups.append([[r.batch_size], flag])
    return [(f"{b[0]}-{b[-1]}" if len(b) > 1 else f"{b[0]}", flag) for b, flag in groups]


def _engine_table(best):
    """Title, header and rows of the best engine configuration per batch size."""
    from sdlaws.formatting import fmt

    header = ["batch", "best configuration", "tokens/step", "steps/batch", "step ms", "decode tok/s",
              "AR decode tok/s", "speedup"]
    rows = [[fmt(r.batch_size), r.label, f"{r.tau:.3f}", f"{r.steps:.1f}", f"{r.step_s * 1e3:.3f}",
             fmt(r.decode_tokens_per_s), fmt(r.ar_decode_tokens_per_s), f"{r.decode_speedup:.3f}"]
            for r in best.itertuples()]
    return "Engine configuration per batch size (predicted decode throughput)", header, rows


def _serving_table(serving, cost: str):
    """Title, header and rows of the per-batch serving plan (``cost`` names the cost model)."""
    from sdlaws.formatting import fmt

    law = "law_topk" in serving
    header = ["batch", "AR tok/s", "chain num_spec_tokens", "Leviathan num_spec_tokens", "chain speedup",
              "tree num_spec_tokens/topk/verify", "tree top-k", "tree speedup", "verify", "fits"]
    header += ["law k*"] if law else []
    rows = []
    for r in serving.itertuples():
        row = [fmt(r.batch_size), fmt(r.ar_tokens_per_s),
               _ci(r.chain_num_spec_tokens, r.chain_num_spec_tokens_lower, r.chain_num_spec_tokens_upper),
               fmt(r.leviathan_num_spec_tokens),
               _ci(r.chain_speedup, r.chain_speedup_lower, r.chain_speedup_upper),
               f"{r.tree_num_spec_tokens}/{r.tree_topk}/{r.tree_verify_tokens}",
               _ci(r.tree_topk, r.tree_topk_lower, r.tree_topk_upper),
               _ci(r.tree_speedup, r.tree_speedup_lower, r.tree_speedup_upper),
               "memory-bound" if r.verify_memory_bound else "compute-bound", "yes" if r.fits_memory else "NO"]
        rows.append(row + ([_ci(r.law_topk, r.law_topk_lower, r.law_topk_upper)] if law else []))
    return f"Serving settings per batch size ({cost}, 95% interval)", header, rows


def _pretraining_table(plans):
    """Title, header and rows of the pretraining plans."""
    from sdlaws.formatting import fmt

    rows = [[fmt(p.inputs["batch_size"]), _ci(p.value, *(p.ci or (None, None))), fmt(p.settings["acceptance"]),
             _ci(p.speedup, *(p.speedup_ci or (None, None))), fmt(p.settings["train_gpu_hours"]),
             fmt(p.settings["serve_gpu_hours"]), fmt(p.settings["next_decade_serve_saving_gpu_hours"]),
             fmt(p.settings["next_decade_train_gpu_hours"])] for p in plans]
    return ("Optimal draft pretraining tokens D* (training + serving GPU-hours)",
            ["batch", "D*", "acceptance", "speedup", "train GPU-h", "serve GPU-h", "next decade saves",
             "next decade costs"], rows)
