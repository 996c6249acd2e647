"""Scores of generated meaning representations (ViGGO `act(slot[value], ...)` strings).

Exact match compares whole normalised strings; slot-level F1 compares the sets of (slot, value)
pairs, micro-averaged over the rows, as the ViGGO paper scores slot realisation. The dialogue act
is scored apart (act accuracy). Light: stdlib only.
"""
import re
from typing import Iterable, Optional, Set, Tuple

_ACT = re.compile(r"^\s*([a-z_]+)\s*\(")
_SLOT = re.compile(r"([a-z_]+)\s*\[([^\]]*)\]")


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def parse_mr(text: str) -> Tuple[Optional[str], Set[Tuple[str, str]]]:
    """(act, {(slot, value)}) of an MR; act is None when the text is not shaped like one."""
    act = _ACT.match(text)
    slots = {(name, normalise(value)) for name, value in _SLOT.findall(text)}
    return (act.group(1) if act else None), slots


def score(predictions: Iterable[str], references: Iterable[str]) -> dict:
    pairs = list(zip(predictions, references))
    exact = hits = predicted = expected = acts = 0
    for prediction, reference in pairs:
        exact += normalise(prediction) == normalise(reference)
        predicted_act, predicted_slots = parse_mr(prediction)
        reference_act, reference_slots = parse_mr(reference)
        acts += predicted_act is not None and predicted_act == reference_act
        hits += len(predicted_slots & reference_slots)
        predicted += len(predicted_slots)
        expected += len(reference_slots)
    precision = hits / predicted if predicted else 0.0
    recall = hits / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    rows = len(pairs) or 1
    return {"rows": len(pairs), "exact_match": round(exact / rows, 4), "act_accuracy": round(acts / rows, 4),
            "slot_precision": round(precision, 4), "slot_recall": round(recall, 4), "slot_f1": round(f1, 4)}
