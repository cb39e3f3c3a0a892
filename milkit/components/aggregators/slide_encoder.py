"""What the slide foundation encoders share: a ``weights`` key, loading the published file, freezing."""

from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator
from milkit.config import ComponentConfig
from milkit.errors import CheckpointError
from milkit.state_dict import load_checked, read_state_dict, sha256_file


class SlideEncoderConfig(ComponentConfig):
    weights: Path | None = Field(
        None, description="Local file of the published weights, as distributed (relative to the recipe's folder); "
                          "None = random init. `freeze = true` keeps them fixed (a linear probe).")


class SlideEncoder(Aggregator):
    """A pretrained slide encoder: declares ``expected_features`` and loads its authors' file with
    :meth:`load_published`, key by key."""

    @classmethod
    def pretrained_weights(cls, config: ComponentConfig) -> Path | None:
        assert isinstance(config, SlideEncoderConfig)
        return config.weights

    def load_published(self, module: nn.Module, *, convert: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None
                       = None, ignore: Iterable[str] = (), expects: str = "") -> None:
        """Load ``config.weights`` into ``module`` (``convert`` maps the file's keys to the module's);
        missing/unexpected/mis-shaped keys raise CheckpointError naming them and, with ``expects``,
        the file this aggregator expects."""
        path = self.config.weights  # type: ignore[attr-defined]
        if path is None:
            return
        state = read_state_dict(path)
        try:
            load_checked(module, convert(state) if convert else state, source=str(path), ignore=ignore)
        except CheckpointError as err:
            raise CheckpointError(f"{err}. Aggregator '{self.name}' expects {expects or 'its published file'}; "
                                  "wrong file, or another model's weights?") from None
        self.weights_sha256 = sha256_file(path)
