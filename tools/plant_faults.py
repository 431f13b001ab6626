"""Plant each hand-written wiring fault of issue 15, run the tests that should catch it, restore the file.

Run it from the root of a SCRATCH copy of the repository (`git worktree add /tmp/plant HEAD`, with the .venv
linked in): it edits source files in place and restores them in a `finally`, but a killed run would leave one
fault behind. Prints one line per fault (CAUGHT / MISSED / SKIP when the pattern no longer matches the code);
docs/mutation-notes.md records the last run. `python tools/plant_faults.py [index ...]`
"""
import sys
import time
from pathlib import Path

W = "tests/test_wiring.py::"
X = "tests/test_prompt_checks.py::"
FAULTS = [
    ("Safe-RLHF reward and cost streams swapped", "methods/safe_rlhf.py", 'return {"reward": rewards, "cost": costs}', 'return {"reward": costs, "cost": rewards}', [W + "test_safe_rlhf_higher_cost_lowers_and_higher_reward_raises_the_advantage"]),
    ("Safe-RLHF mixing A^R + λ·A^C", "harness/training/rl_math.py", "return (reward_adv - lam * cost_adv) / (1.0 + lam)", "return (reward_adv + lam * cost_adv) / (1.0 + lam)", [W + "test_safe_rlhf_higher_cost_lowers_and_higher_reward_raises_the_advantage"]),
    ("Safe-RLHF cost window fed rewards", "methods/safe_rlhf.py", "cost_window.extend(ro.costs.tolist())", "cost_window.extend(ro.rewards.tolist())", [W + "test_safe_rlhf_loop_feeds_costs_to_the_dual_and_the_advantage"]),
    ("Safe-RLHF KL stream names exchanged", "methods/safe_rlhf.py", "c.kl_coef, c.clip_range_score, stream=name)", "c.kl_coef, c.clip_range_score, stream={'reward': 'cost', 'cost': 'reward'}[name])", [W + "test_safe_rlhf_kl_lowers_the_reward_stream_and_raises_the_cost_stream"]),
    ("PPO step with the advantage's sign flipped", "methods/safe_rlhf.py", "actor_loss = clipped_surrogate_loss(log_probs, ro.log_probs, advantage, ro.mask, c.clip_range_ratio)", "actor_loss = clipped_surrogate_loss(log_probs, ro.log_probs, -advantage, ro.mask, c.clip_range_ratio)", [W + "test_ppo_step_raises_the_probability_of_positive_advantage_tokens"]),
    ("reward shaping R + ν·C", "methods/ppo_shaping.py", "rewards - self.config.cost_coef * costs", "rewards + self.config.cost_coef * costs", [W + "test_ppo_shaping_pays_r_minus_nu_c_to_one_critic"]),
    ("P-SACPO merge order swapped", "methods/p_sacpo.py", "out = merge_models(first, final, q, ctx.out_dir, record)", "out = merge_models(final, first, q, ctx.out_dir, record)", [W + "test_p_sacpo_merges_stage_one_at_weight_one_minus_q"]),
    ("P-SACPO weights q and 1 − q exchanged", "harness/training/merging.py", "merged = (1.0 - q) * ta.detach().to(torch.float32) + q * tb", "merged = q * ta.detach().to(torch.float32) + (1.0 - q) * tb", [W + "test_merge_models_weights_the_first_model_by_one_minus_q"]),
    ("SACPO stage 2 at β instead of β/λ", "methods/sacpo.py", 'safe = ("safe", ctx.cost_pairs, beta_safe)', 'safe = ("safe", ctx.cost_pairs, beta)', [W + "test_sacpo_stage_order_temperatures_and_reference"]),
    ("SACPO order flag inverted", "methods/sacpo.py", "stages = (safe, helpful) if self.config.safety_first else (helpful, safe)", "stages = (helpful, safe) if self.config.safety_first else (safe, helpful)", [W + "test_sacpo_stage_order_temperatures_and_reference"]),
    ("SACPO stage 2 starts from π_ref", "methods/sacpo.py", "final = self.align(ctx, name2, pairs2, first, beta2, final_dir)", "final = self.align(ctx, name2, pairs2, ctx.policy_path, beta2, final_dir)", [W + "test_sacpo_stage_order_temperatures_and_reference"]),
    ("PD-DPO dual moves λ the wrong way", "methods/pddpo.py", 'dual_update(lam, record["cost_estimate"], b, c.eta, c.lambda_max)', 'dual_update(lam, b, record["cost_estimate"], c.eta, c.lambda_max)', [W + "test_pddpo_dual_raises_lambda_above_b_and_references_pi_r"]),
    ("PD-DPO stage-2 reference = SFT model", "methods/pddpo.py", "new = train_dpo(ctx.cost_pairs, init=init, ref=pi_r,", "new = train_dpo(ctx.cost_pairs, init=init, ref=None,", [W + "test_pddpo_dual_raises_lambda_above_b_and_references_pi_r"]),
    ("PD-DPO estimate units exchanged", "methods/pddpo.py", '"cost_estimate": unsafe_rate if units == "unsafe_rate" else mean_cost', '"cost_estimate": mean_cost if units == "unsafe_rate" else unsafe_rate', [W + "test_pddpo_dual_estimate_in_each_unit"]),
    ("PD-DPO unsafe = cost ≥ 0", "methods/pddpo.py", "unsafe_rate = sum(c > 0 for c in costs) / len(costs)", "unsafe_rate = sum(c >= 0 for c in costs) / len(costs)", [W + "test_pddpo_dual_estimate_in_each_unit"]),
    ("online PD-DPO: costlier response first", "methods/pddpo_online.py", "rejected_safe=cb <= 0, source=src) if ca < cb", "rejected_safe=cb <= 0, source=src) if ca > cb", [W + "test_online_pairs_put_the_cheaper_response_first"]),
    ("online PD-DPO: bonus safe/unsafe exchanged", "methods/pddpo_online.py", "margins = online_bonus_margin(lam, bonus_r(phi_s), bonus_r(phi_u), bonus_c(phi_s), bonus_c(phi_u))", "margins = online_bonus_margin(lam, bonus_r(phi_u), bonus_r(phi_s), bonus_c(phi_u), bonus_c(phi_s))", [W + "test_online_bonus_margin_favours_the_safer_response"]),
    ("SafeDPO margin with + sign", "methods/safedpo.py", "return [-(unsafe(p.rejected_safe) - unsafe(p.chosen_safe)) * delta for p in pairs]", "return [(unsafe(p.rejected_safe) - unsafe(p.chosen_safe)) * delta for p in pairs]", [W + "test_safedpo_trains_on_transformed_reward_pairs_with_negative_margins"]),
    ("SafeDPO keeps instead of swapping", "methods/safedpo.py", "out.append(p.swapped())", "out.append(p)", [W + "test_safedpo_trains_on_transformed_reward_pairs_with_negative_margins"]),
    ("SafeDPO transform on cost pairs", "methods/safedpo.py", "pairs, counts = safedpo_transform(ctx.reward_pairs)", "pairs, counts = safedpo_transform(ctx.cost_pairs)", [W + "test_safedpo_trains_on_transformed_reward_pairs_with_negative_margins"]),
    ("MoCAN relabel s = r − λ·g", "methods/mocan.py", "s = [ri + lam * gi for ri, gi in zip(r2, g2)]", "s = [ri - lam * gi for ri, gi in zip(r2, g2)]", [W + "test_mocan_relabel_prefers_safer_when_lambda_is_large_and_helpful_when_zero"]),
    ("MoCAN dual bound sign", "methods/mocan.py", "result = mocan_dual(r, g, -bound, beta, c.check_feasible, **c.solver())", "result = mocan_dual(r, g, bound, beta, c.check_feasible, **c.solver())", [W + "test_mocan_dual_direction"]),
    ("PeCAN h = log π_ref − log π_r", "methods/pecan.py", 'h_r = [lp["r"][i] - lp["ref"][i] for i in range(3)]', 'h_r = [lp["ref"][i] - lp["r"][i] for i in range(3)]', [W + "test_pecan_scorers_relabel_and_dual_direction"]),
    ("PeCAN h_r and h_g exchanged in the relabel", "methods/pecan.py", "s_c = pecan_scores(h_r[1].tolist(), h_g[1].tolist(), lam, beta, c.beta_in_relabel)", "s_c = pecan_scores(h_g[1].tolist(), h_r[1].tolist(), lam, beta, c.beta_in_relabel)", [W + "test_pecan_scorers_relabel_and_dual_direction"]),
    ("PeCAN dual margin sign", "methods/pecan.py", "+ kl_ref_g - margin / beta)", "+ kl_ref_g + margin / beta)", [W + "test_pecan_scorers_relabel_and_dual_direction"]),
    ("PeCAN reachable slack with the margin's sign flipped", "methods/pecan.py", "return max_slack(h_g, float(h_g.mean()) + margin / beta)", "return max_slack(h_g, float(h_g.mean()) - margin / beta)", [W + "test_pecan_stops_an_infeasible_dual_before_any_step"]),
    ("dpo-harmless on reward pairs", "methods/dpo_harmless.py", "train_plain_dpo(ctx, ctx.cost_pairs,", "train_plain_dpo(ctx, ctx.reward_pairs,", [W + "test_dpo_helpful_uses_reward_pairs_and_dpo_harmless_cost_pairs"]),
    ("dpo-helpful on cost pairs", "methods/dpo_helpful.py", "return train_plain_dpo(ctx, ctx.reward_pairs,", "return train_plain_dpo(ctx, ctx.cost_pairs,", [W + "test_dpo_helpful_uses_reward_pairs_and_dpo_harmless_cost_pairs"]),
    ("bootstrap CI level 90%", "evaluators/stats.py", "CI_LEVEL = 0.95", "CI_LEVEL = 0.90", ["tests/test_evaluators_metrics.py::test_ci_level_is_95_percent_exactly", "tests/test_evaluators_metrics.py::test_ci_width_matches_the_normal_95_percent_interval"]),
    ("PD-DPO stage-2 temperature off by 1%", "harness/training/losses.py", "    return beta / lam\n", "    return 1.01 * beta / lam\n", ["tests/test_bandit.py::test_stage2_at_fixed_lambda_matches_closed_form"]),
    ("sampling ignores the seed", "harness/generation.py", "torch.manual_seed(params.seed + i)", "torch.manual_seed(0 + i)", ["tests/test_generation.py::test_seeded_sampling_is_reproducible_and_follows_the_seed"]),
    ("leaderboard ties: higher constraint metric first", "leaderboards/compare.py", "            cost if cost is not None else float(\"inf\"), row[\"method\"])", "            -cost if cost is not None else float(\"inf\"), row[\"method\"])", ["tests/test_leaderboards.py::test_ties_break_on_the_constraint_metric_then_the_method_name"]),
    ("win rate: a tie counts as a loss", "evaluators/metrics.py", "return np.where(a == b, 0.5, better.astype(float))", "return np.where(a == b, 0.0, better.astype(float))", ["tests/test_runs.py::test_cli_resume_after_kills_in_train_generate_and_score"]),
    ("resume re-runs finished stages", "harness/runs.py", "        if self.done:\n", "        if False:\n", ["tests/test_runs.py::test_cli_resume_after_kills_in_train_generate_and_score"]),
    ("LoRA PPO reference with the adapters enabled", "harness/training/ppo.py", "        with actor.disable_adapter():\n            return actor(**kwargs)", "        if True:\n            return actor(**kwargs)", [W + "test_lora_ppo_reference_is_the_sft_model_and_only_adapters_and_heads_train"]),
    ("LoRA PPO critic optimises the whole shared model", "harness/training/ppo.py", "return [*adapter_parameters(self._actor[0], self.adapter), *self.head.parameters()]", "return [*self._actor[0].parameters(), *self.head.parameters()]", [W + "test_lora_ppo_reference_is_the_sft_model_and_only_adapters_and_heads_train"]),
    ("SACPO naive merge: safe model at weight 1 − q", "methods/sacpo_naive_merge.py", 'out = merge_models(models["helpful"], models["safe"], q,', 'out = merge_models(models["safe"], models["helpful"], q,', [W + "test_sacpo_naive_merge_trains_both_from_sft_and_weights_the_safe_model_by_q"]),
    ("KTO: an unsafe response made desirable", "harness/training/kto.py", "out.append(LabelledResponse(p.prompt, response, bool(safe), p.source))", "out.append(LabelledResponse(p.prompt, response, not safe, p.source))", [W + "test_kto_examples_desirable_is_the_response_labelled_safe"]),
    ("SACPO-KTO: KTO on the helpfulness step", "methods/sacpo.py", 'if name == "safe" and self.safety_loss == "kto":', 'if name == "helpful" and self.safety_loss == "kto":', [W + "test_sacpo_kto_runs_kto_on_safety_labels_from_pi_r"]),
    ("XSTest over-refusal on the 200 unsafe prompts", "harness/datasets/prompt_sets.py", 'if r.get("label") == "safe"]', 'if r.get("label") == "unsafe"]', [X + "test_xstest_stage_loads_exactly_the_safe_prompts", X + "test_xstest_subset_never_holds_an_unsafe_prompt"]),
    ("XSTest over-refusal on all 450 prompts", "harness/datasets/prompt_sets.py", 'if r.get("label") == "safe"]', 'if r.get("label")]', [X + "test_xstest_stage_loads_exactly_the_safe_prompts", X + "test_xstest_subset_never_holds_an_unsafe_prompt"]),
    ("judges train on eval-fold prompts", "harness/datasets/judge_data.py", 'if fold_of(prompt, FOLD_BOUNDS) == "eval":', 'if False:', ["tests/test_judges.py::test_eval_fold_prompts_never_reach_a_judges_training_or_calibration_rows"]),
    ("harmful prompts a judge trained on kept", "harness/datasets/prompt_sets.py", "kept = [p for k, p in prompts.items() if k not in seen]", "kept = list(prompts.values())", ["tests/test_harmful_compliance.py::test_a_harmful_prompt_a_judge_trains_on_is_dropped"]),
    ("harmful compliance = refusal rate", "evaluators/metrics.py", "per_item=lambda flags: [1.0 - float(f) for f in flags]),", "per_item=lambda flags: [float(f) for f in flags]),", ["tests/test_harmful_compliance.py::test_harmful_compliance_is_the_share_not_refused_with_its_bootstrap_ci_overall_and_per_category"]),
    ("equal ranks: every member of a tier keeps its own position", "leaderboards/compare.py", 'r["rank"] = first[tier] if tier is not None else r.get("position")', 'r["rank"] = r.get("position")', ["tests/test_leaderboard_views.py::test_shared_ranks_follow_the_tiers", "tests/test_leaderboard_views.py::test_one_tier_shows_equal_ranks_a_banner_and_no_bold_winner"]),
    ("equal ranks: a tier of one shown tied (\"1=\")", "leaderboards/compare.py", 'r["tied"] = tier is not None and size[tier] > 1', 'r["tied"] = tier is not None and size[tier] >= 1', ["tests/test_leaderboard_views.py::test_shared_ranks_follow_the_tiers"]),
    ("harmful compliance ranked higher-is-better", "evaluators/metrics.py", 'Metric("harmful_compliance", ("harmful", "harmful_compliance"), False,', 'Metric("harmful_compliance", ("harmful", "harmful_compliance"), True,', ["tests/test_harmful_compliance.py::test_harmful_compliance_is_the_share_not_refused_with_its_bootstrap_ci_overall_and_per_category"]),
]
def _purge_project_modules(root: Path) -> None:
    """Forget every module loaded from this tree (and the test modules), so the next pytest run imports the
    planted source; torch, transformers and TRL stay loaded, which is what makes one process per fault unnecessary."""
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if name == "__main__":
            continue
        ours = f.startswith(str(root)) and not f.startswith(str(root / ".venv"))
        if ours or name.startswith(("test_", "conftest", "results_fixtures", "bench_plugin")):
            del sys.modules[name]


def main() -> None:
    import pytest

    sys.dont_write_bytecode = True  # a planted and a restored file can share size and mtime second: never cache bytecode

    root = Path.cwd().resolve()
    sys.path.insert(0, str(root))  # import the (planted) packages of this tree, not the editable install
    only = sys.argv[1:]
    for i, (what, path, old, new, tests) in enumerate(FAULTS):
        if only and str(i) not in only:
            continue
        p = Path(path)
        src = p.read_text()
        if src.count(old) != 1:
            print(f"{i:2d} SKIP (pattern found {src.count(old)}x): {what}", flush=True)
            continue
        p.write_text(src.replace(old, new))
        try:
            _purge_project_modules(root)
            t = time.time()
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *tests])
            import methods

            assert Path(methods.__file__).resolve().is_relative_to(root), f"methods imported from {methods.__file__}"
            verdict = "CAUGHT" if code == 1 else "MISSED" if code == 0 else f"ERROR (pytest exit {int(code)})"
            print(f"@@ {i:2d} {verdict} ({time.time() - t:.0f}s): {what} [{path}] by {', '.join(x.split('::')[-1] for x in tests)}", flush=True)
        finally:
            p.write_text(src)
    _purge_project_modules(root)


if __name__ == "__main__":
    main()
