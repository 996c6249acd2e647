"""The plan's data: rows from files, rows → TRL dataset examples by the format, train/eval split.

Examples use TRL's dataset formats, so SFTTrainer tokenizes them and masks the loss:
  template, instruction   {"prompt": str, "completion": str}           (prompt-completion)
  chat                    {"prompt": [msgs], "completion": [assistant]} with completion-only loss,
                          {"messages": [msgs]} without
  text                    {"text": str}, or {"input_ids": block} when grouped into blocks
Every row problem is a DataError naming the file and the line (or record) it is on.
"""
import json
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..schema.data_files import DataError, Row, chat_messages, json_object, template_fields
from .data_sources import fingerprint, iter_source_rows, signature

def default_cache() -> Path:
    """S3 objects downloaded once, and the Arrow files of the datasets (outside the run folder, which
    SageMaker uploads as the job's model)."""
    from .model_loading import cache_root

    return cache_root() / "data"


def read_rows(source: dict, cache: Optional[Path] = None) -> List[Row]:
    """The rows of a plan data source (up to its `limit`), each with where it is in the file."""
    return list(iter_source_rows(source, cache or default_cache()))


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


def iter_examples(data_plan: dict, source: dict, cache: Path) -> Iterator[dict]:
    for where, row in iter_source_rows(source, cache):
        yield to_example(data_plan, row, source["path"], where)


def examples(data_plan: dict, source: dict, cache: Optional[Path] = None) -> List[dict]:
    return list(iter_examples(data_plan, source, cache or default_cache()))


def iter_blocks(texts: Iterator[str], tokenizer, block_size: int, file: str) -> Iterator[dict]:
    """Pre-training blocks (seed 001's group_texts): all texts joined by EOS, cut into full blocks,
    holding no more than one block's tokens at a time."""
    ids: List[int] = []
    produced = False
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        while len(ids) >= block_size:
            yield {"input_ids": ids[:block_size]}
            ids = ids[block_size:]
            produced = True
    if not produced:
        raise DataError(file, None, f"{len(ids)} tokens in all, fewer than one block of {block_size}")


def _generate_examples(data_plan: dict, source: dict, cache: str):
    yield from iter_examples(data_plan, source, Path(cache))


def _generate_blocks(dataset, tokenizer, block_size: int, file: str):
    yield from iter_blocks((example["text"] for example in dataset), tokenizer, block_size, file)


def _arrow_dataset(generator, cache_dir: str, arguments: dict, key: str):
    """The generator's examples as a memory-mapped Arrow dataset (reused while `key` is the same)."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    try:
        return Dataset.from_generator(generator, cache_dir=cache_dir, gen_kwargs=arguments, fingerprint=key)
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):  # the row's own message, not the library's wrapper
            raise error.__cause__ from None
        raise


def build_datasets(plan: dict, tokenizer, cache: Optional[Path] = None):
    """(train, eval or None) as datasets.Dataset in TRL's formats, written to Arrow files in `cache` as
    the rows are read (memory-mapped: a source larger than memory is never held whole)."""
    from datasets import Dataset

    data = plan["data"]
    cache = cache or default_cache()
    arrow = str(cache / "arrow")

    def dataset(source: dict) -> Dataset:
        return _arrow_dataset(_generate_examples, arrow, {"data_plan": data, "source": source, "cache": str(cache)},
                              fingerprint(json.dumps(data, sort_keys=True), signature(source, cache)))

    train = dataset(data["train"])
    evaluation = dataset(data["eval"]) if data.get("eval") else None
    if evaluation is None and data.get("eval_fraction"):
        split = train.train_test_split(test_size=data["eval_fraction"], seed=plan["trainer"].get("seed", 42))
        train, evaluation = split["train"], split["test"]
    fmt = data["format"]
    if fmt["type"] == "text" and fmt.get("group_into_blocks", True):
        block_size = plan["batch"]["sequence_length"]

        def blocks(texts: Dataset, name: str) -> Dataset:
            return _arrow_dataset(
                _generate_blocks, arrow,
                {"dataset": texts, "tokenizer": tokenizer, "block_size": block_size, "file": name},
                fingerprint(texts._fingerprint, tokenizer.name_or_path, str(block_size)))

        train = blocks(train, data["train"]["path"])
        if evaluation is not None:
            evaluation = blocks(evaluation, (data.get("eval") or data["train"])["path"])
    return train, evaluation


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
