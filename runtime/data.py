"""The plan's data: rows from files, rows → TRL dataset examples by the format, train/eval split.

Examples use TRL's dataset formats, so SFTTrainer tokenizes them and masks the loss:
  template, instruction   {"prompt": str, "completion": str}           (prompt-completion)
  chat                    {"prompt": [msgs], "completion": [assistant]} with completion-only loss,
                          {"messages": [msgs]} without
  text                    {"text": str}, or {"input_ids": block} when grouped into blocks
Every row problem is a DataError naming the file and the line (or record) it is on.
"""
from pathlib import Path
from typing import List, Optional, Tuple

from ..data_files import FORMATS_BY_SUFFIX, DataError, Row, chat_messages, iter_rows, json_object, template_fields
from ..package_files import PackageFileError, is_package_uri, package_file


def resolve_path(path: str) -> Path:
    """A plan data path as a local file (`pkg://` located in its package, relative to the cwd)."""
    if path.startswith(("s3://", "hub:")):
        raise DataError(path, None, "remote data is staged by the SageMaker/Slurm backends; "
                                    "for a local run, download it and give its local path")
    if is_package_uri(path):
        try:
            return package_file(path)
        except PackageFileError as error:
            raise DataError(path, None, str(error)) from None
    local = Path(path).expanduser()
    if not local.is_file():
        raise DataError(path, None, "no such file")
    return local


def file_format(source: dict, path: Path) -> str:
    fmt = source.get("format") or FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise DataError(source["path"], None, "cannot tell the file format from its extension; set `format`")
    return fmt


def read_rows(source: dict) -> List[Row]:
    """The rows of a plan data source (up to its `limit`), each with where it is in the file."""
    path = resolve_path(source["path"])
    fmt = file_format(source, path)
    name = source["path"]
    rows = iter_rows(path, fmt, name)
    limit = source.get("limit")
    selected = []
    for row in rows:
        selected.append(row)
        if limit and len(selected) >= limit:
            break
    if not selected:
        raise DataError(name, None, "no rows")
    return selected


def _value(row: dict, column: str, file: str, where: str, required: bool = True):
    if column not in row:
        raise DataError(file, where, f"no column {column!r} (columns: {', '.join(map(str, row))})")
    value = row[column]
    if required and (value is None or (isinstance(value, str) and not value.strip())):
        raise DataError(file, where, f"column {column!r} is empty")
    return value


def _template_example(fmt: dict, row: dict, file: str, where: str) -> dict:
    values = {column: _value(row, column, file, where)
              for column in template_fields(fmt["prompt"]) + template_fields(fmt["completion"])}
    return {"prompt": fmt["prompt"].format(**values), "completion": fmt["completion"].format(**values)}


def instruction_prompt(instruction: str, context: Optional[str]) -> str:
    # The dolly layout of seed 003 (### sections, blank lines between, no context section when empty).
    parts = [f"### Instruction\n{instruction}"]
    if context:
        parts.append(f"### Context\n{context}")
    parts.append("### Answer\n")
    return "\n\n".join(parts)


def _instruction_example(fmt: dict, row: dict, file: str, where: str) -> dict:
    instruction = _value(row, fmt["instruction"], file, where)
    context = _value(row, fmt["context"], file, where, required=False) if fmt.get("context") else None
    response = _value(row, fmt["response"], file, where)
    return {"prompt": instruction_prompt(str(instruction), str(context) if context else None),
            "completion": str(response)}


def _chat_example(fmt: dict, row: dict, file: str, where: str, completion_only: bool) -> dict:
    messages = chat_messages(row, fmt["messages"], file, where)
    if completion_only:
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {"messages": messages}


def to_example(data_plan: dict, row: dict, file: str, where: str) -> dict:
    fmt = data_plan["format"]
    if fmt["type"] == "template":
        return _template_example(fmt, row, file, where)
    if fmt["type"] == "instruction":
        return _instruction_example(fmt, row, file, where)
    if fmt["type"] == "chat":
        return _chat_example(fmt, row, file, where, bool(data_plan.get("completion_only_loss")))
    return {"text": str(_value(row, fmt["column"], file, where))}


def examples(data_plan: dict, source: dict) -> List[dict]:
    return [to_example(data_plan, row, source["path"], where) for where, row in read_rows(source)]


def group_into_blocks(texts: List[str], tokenizer, block_size: int, file: str) -> List[dict]:
    """Pre-training blocks (seed 001's group_texts): all texts joined by EOS, cut into full blocks."""
    ids: List[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    count = len(ids) // block_size
    if count == 0:
        raise DataError(file, None, f"{len(ids)} tokens in all, fewer than one block of {block_size}")
    return [{"input_ids": ids[i * block_size:(i + 1) * block_size]} for i in range(count)]


def build_datasets(plan: dict, tokenizer):
    """(train, eval or None) as datasets.Dataset in TRL's formats."""
    from datasets import Dataset

    data = plan["data"]
    train = examples(data, data["train"])
    evaluation = examples(data, data["eval"]) if data.get("eval") else None
    if evaluation is None and data.get("eval_fraction"):
        split = Dataset.from_list(train).train_test_split(test_size=data["eval_fraction"],
                                                          seed=plan["trainer"].get("seed", 42))
        train, evaluation = split["train"].to_list(), split["test"].to_list()
    fmt = data["format"]
    if fmt["type"] == "text" and fmt.get("group_into_blocks", True):
        size = data["max_seq_length"]
        train = group_into_blocks([e["text"] for e in train], tokenizer, size, data["train"]["path"])
        if evaluation is not None:
            name = (data.get("eval") or data["train"])["path"]
            evaluation = group_into_blocks([e["text"] for e in evaluation], tokenizer, size, name)
    return Dataset.from_list(train), (Dataset.from_list(evaluation) if evaluation else None)


def generation_prompt(plan: dict, text: str, tokenizer) -> str:
    """A user's prompt in the shape the model was trained on (`tunespec generate`, sample prompts).

    Templates with one placeholder take the text as its value; several placeholders take a JSON
    object of columns.
    """
    fmt = plan["data"]["format"]
    if fmt["type"] == "template":
        fields = template_fields(fmt["prompt"])
        if len(fields) == 1:
            return fmt["prompt"].format(**{fields[0]: text})
        row = json_object("prompt", "text", text)
        return fmt["prompt"].format(**{f: _value(row, f, "prompt", "text") for f in fields})
    if fmt["type"] == "instruction":
        return instruction_prompt(text, None)
    if fmt["type"] == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def prompt_and_reference(example: dict, tokenizer) -> Tuple[str, str]:
    """A prompt-completion example as (prompt text to generate from, the expected completion)."""
    if isinstance(example["prompt"], list):
        prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
        return prompt, example["completion"][0]["content"]
    return example["prompt"], example["completion"]
