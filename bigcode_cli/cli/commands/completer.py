"""One completion, whoever runs it: the request, the result every display reads, and the two completers.

`complete`, `generate` and `infill` build a `CompletionRequest` and run it with generation_run's
`completer_for(...)`: a `LocalCompleter` (generation_run: loads the model here) or a `RemoteCompleter`
(server_client: asks a running `bigcode serve`). Both return the same `CompletionResult`, which
generation_output turns into --json records and generation_run shows. No torch at import time; this module
imports none of its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.generation.fim import Mode

OnText = Callable[[str], None]  # receives the first sample's text as it is generated


class CompletionRequest(NamedTuple):
    """What to complete and how: the text around the cursor, the kind of completion, the settings."""

    prefix: str
    suffix: str
    mode: Mode
    settings: CompletionSettings


class Sample(NamedTuple):
    """One finished sample."""

    text: str
    stop_reason: str
    new_tokens: int


@dataclass(frozen=True)
class CompletionResult:
    """A finished completion as every display of it needs it, the same from a local run and from a server."""

    samples: list[Sample]
    mode: str
    prompt: str  # the prompt the model saw, special tokens spelled out
    prompt_tokens: int
    truncated: bool  # the input was cut to fit the context
    dtype: str | None  # what the model computed in (--dtype auto's choice); None when unknown
    load_s: float  # 0 when no model was loaded here
    prefill_s: float
    decode_s: float
    tokens_per_s: float
    interrupted: bool = False  # Ctrl-C stopped the generation
    notice: str | None = None  # a note for stderr once the streamed text has ended
    draft_tokens: int = 0  # tokens drafted by --speculate ngram and verified
    draft_accepted: int = 0  # of them, those accepted

    @property
    def texts(self) -> list[str]:
        """The completion of each sample."""
        return [sample.text for sample in self.samples]


class Completer(Protocol):
    """Runs a completion request; streams the first sample's text to `on_text` when it is given."""

    def complete(self, request: CompletionRequest, on_text: OnText | None) -> CompletionResult:
        """The finished completion."""
        ...
