"""Only what pyproject.toml cannot say: the wheel ships `configs/` (profiles, accelerate presets) as `harness/configs/`.

`configs/` stays at the top of the repository for users to read and copy; `harness.config.CONFIG_DIR` finds the
packaged copy in an installed wheel and the checkout's folder otherwise. tests/test_packaging.py builds the wheel,
installs it into a fresh venv and runs `bench run --profile tiny` from outside the repository.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "harness" / "configs"
        for src in sorted(CONFIGS.rglob("*.yaml")):
            dest = target / src.relative_to(CONFIGS)
            self.mkpath(str(dest.parent))
            self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildWithConfigs})
