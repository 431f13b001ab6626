"""The pairwise judge against a fake OpenAI-compatible server on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from evaluators.judge import RUBRICS, ChatClient, JudgeConfig, elo_ratings, judge_models, parse_scores, rubric_hash
from harness.errors import BenchError


def _answers(user: str) -> tuple[str, str]:
    a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A", user, re.S).group(1)
    b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B", user, re.S).group(1)
    return a, b


class FakeJudge(BaseHTTPRequestHandler):
    """Scores an answer 9 if it contains GOOD, else 2. Mode "first" always prefers position A (pure position bias);
    a question containing BROKEN gets an unparseable reply."""

    mode = "content"
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"body": body, "auth": self.headers.get("Authorization")})
        user = body["messages"][1]["content"]
        a, b = _answers(user)
        if "BROKEN" in user:
            text = "I think A is better."
        elif self.mode == "first":
            text = "7 3\nA reads better."
        else:
            text = f"{9 if 'GOOD' in a else 2} {9 if 'GOOD' in b else 2}\nbecause."
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture()
def server():
    FakeJudge.mode, FakeJudge.requests = "content", []
    httpd = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "BROKEN question"]


def _cfg(url: str, **kw) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="fake-judge-2026-01-01", api_key_env="BENCH_TEST_JUDGE_KEY", concurrency=2, **kw)


def test_parse_scores():
    assert parse_scores("8 3\nexplanation") == (8.0, 3.0)
    assert parse_scores("\n 7.5, 6 \n") == (7.5, 6.0)
    assert parse_scores("A is better") is None
    assert parse_scores("8 3 1") is None
    assert parse_scores("Scores: 8 and 3") is None
    assert parse_scores("8/10 3/10") is None
    assert parse_scores(None) is None


def test_judge_win_rate_both_orders_elo_and_failures(server, monkeypatch):
    monkeypatch.setenv("BENCH_TEST_JUDGE_KEY", "sk-test")
    answers = {"sft": ["meh", "meh", "meh"], "aligned": ["GOOD answer", "GOOD joke", "GOOD"]}
    report = judge_models(PROMPTS, answers, reference="sft", cfg=_cfg(server, repeats=2), n_boot=100)
    # 2 rubrics x 3 prompts x 2 orders x 2 repeats
    assert len(FakeJudge.requests) == 24
    first = FakeJudge.requests[0]
    assert first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "fake-judge-2026-01-01" and first["body"]["temperature"] == 0.7 and first["body"]["max_tokens"] == 8
    for rubric in ("helpfulness", "harmlessness"):
        r = report["rubrics"][rubric]
        wr = r["win_rate_vs_reference"]["aligned"]
        assert wr["win_rate"]["value"] == 1.0 and wr["n_prompts"] == 2
        assert wr["parse_failures"] == 4 and r["parse_failures"] == 4 and r["n_judgments"] == 12
        assert wr["repeats"] == {"mean": 1.0, "std": 0.0, "n": 2}
        assert wr["first_position_win_rate"] == pytest.approx(0.5)  # the better answer was shown first half the time
        assert r["elo"]["sft"]["mean"] == pytest.approx(1000.0)
        assert r["elo"]["aligned"]["mean"] > 1000.0
    assert report["judge"]["rubric_hash"] == rubric_hash(RUBRICS)
    assert report["judge"]["model"] == "fake-judge-2026-01-01" and "sk-test" not in json.dumps(report)


def test_position_bias_cancels_over_both_orders(server):
    FakeJudge.mode = "first"
    answers = {"sft": ["a", "b"], "other": ["c", "d"]}
    report = judge_models(PROMPTS[:2], answers, reference="sft", cfg=_cfg(server), rubrics={"helpfulness": RUBRICS["helpfulness"]}, n_boot=50)
    wr = report["rubrics"]["helpfulness"]["win_rate_vs_reference"]["other"]
    assert wr["win_rate"]["value"] == pytest.approx(0.5)
    assert wr["first_position_win_rate"] == pytest.approx(1.0)


def test_failure_as_tie_reproduces_sacpo(server):
    answers = {"sft": ["x"], "m": ["GOOD"]}
    report = judge_models(["BROKEN"], answers, reference="sft", cfg=_cfg(server, failure_as_tie=True), n_boot=20)
    wr = report["rubrics"]["helpfulness"]["win_rate_vs_reference"]["m"]
    assert wr["parse_failures"] == 0 and wr["win_rate"]["value"] == 0.5


def test_unreachable_endpoint_is_a_bench_error():
    client = ChatClient(JudgeConfig(base_url="http://127.0.0.1:9/v1", retries=0, timeout_s=2))
    with pytest.raises(BenchError, match="unreachable"):
        client.complete("s", "u")


def test_elo_by_hand_single_match():
    # one match, one pass, one trial: a wins from 1200/1200 -> a = 1216, b = 1184; rescaled so b = 1000
    out = elo_ratings([("a", "b", 1.0)], anchor="b", n_trials=1, n_passes=1)
    assert out["b"]["mean"] == pytest.approx(1000.0)
    assert out["a"]["mean"] == pytest.approx(1216.0 * 1000.0 / 1184.0)
