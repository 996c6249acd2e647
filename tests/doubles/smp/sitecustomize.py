"""Test double of SageMaker's SMP image: makes `torch.sagemaker` (shipped inside torch only in the SMP
image) importable from this folder. Put this folder on PYTHONPATH; Python imports this file at start."""
import importlib.abc
import importlib.util
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "torch_sagemaker"


class _TorchSagemakerFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch.sagemaker":
            return None
        return importlib.util.spec_from_file_location(fullname, PACKAGE / "__init__.py",
                                                      submodule_search_locations=[str(PACKAGE)])


sys.meta_path.insert(0, _TorchSagemakerFinder())
