"""Request bodies of the two protocols, as pydantic models.

Every string is checked to be Unicode text (text.textfile.check_unicode: JSON can spell a lone
surrogate, which no tokenizer takes), so a bad string is a 400 naming its field before any work starts.
Unknown fields are accepted and ignored (editor plugins send samplers, penalties and options we do not
implement: refusing them would break the plugin). Fields we use are checked strictly: a string where
a number belongs is a 400, not a guess.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from bigcode_cli.choices import MAX_SEED, FimOrder, Speculate
from bigcode_cli.errors import InputError
from bigcode_cli.generation.completion import MAX_SAMPLES
from bigcode_cli.generation.fim import Mode
from bigcode_cli.text.textfile import check_unicode

# OpenAI allows up to 4 stop strings; llama.vim sends a list of any length: keep a sane bound
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_EXTRA_CHUNKS = 64
MAX_CACHE_SALT_CHARS = 256

Number = float  # strict: an int or a float, never a string or a bool


class _Body(BaseModel):
    """A JSON object of a request: unknown fields ignored, known ones strict, every string valid Unicode."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*")
    @classmethod
    def _unicode(cls, value: Any) -> Any:
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, list) and value and isinstance(value[0], str):
            texts = value  # validated already: every item has the first one's type (not a million token ids)
        else:
            return value
        for text in texts:
            try:
                check_unicode(text, "the string" if text is value else "a string in it")
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return value


class _Request(_Body):
    # the request's own prompt-cache partition (vLLM's name): reuse only between requests with the same salt
    cache_salt: Optional[Annotated[StrictStr, Field(max_length=MAX_CACHE_SALT_CHARS)]] = None
    # n-gram speculation for this request ("ngram" | "off"); absent: the server's --speculate
    speculate: Optional[Speculate] = None

    @field_validator("temperature", "top_p", "repetition_penalty", "repeat_penalty", check_fields=False)
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("stop", check_fields=False)
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return [s for s in stops if s]  # an empty stop string means nothing: dropped, as llama.cpp does


class BigcodeOptions(_Body):
    """Our own extension of /v1/completions, sent by `bigcode complete|generate|infill --server`: the
    options of those commands that OpenAI's API has no field for, and a request for the details
    their --json prints."""

    mode: Optional[Mode] = None  # continue: the prompt is plain text, as `bigcode generate`
    lines: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    block: Optional[StrictBool] = None
    fim_order: Optional[FimOrder] = None
    details: StrictBool = False


class CompletionRequest(_Request):
    """OpenAI `POST /v1/completions` (the legacy completions API; `suffix` = fill-in-the-middle)."""

    model: Optional[StrictStr] = None
    prompt: Union[StrictStr, list[StrictStr], list[StrictInt]] = ""
    suffix: Optional[StrictStr] = None
    max_tokens: Optional[Annotated[StrictInt, Field(ge=0)]] = 16  # OpenAI's default
    temperature: Optional[Annotated[Number, Field(ge=0)]] = None
    top_p: Optional[Annotated[Number, Field(gt=0, le=1)]] = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_SAMPLES)] = 1
    stream: StrictBool = False
    stop: Union[StrictStr, list[StrictStr], None] = None
    seed: Optional[Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]] = None
    # not OpenAI's, but vLLM's and llama.cpp's OpenAI endpoints take them
    top_k: Optional[StrictInt] = None
    repetition_penalty: Optional[Annotated[Number, Field(gt=0)]] = None
    bigcode: Optional[BigcodeOptions] = None


class ExtraChunk(_Body):
    """One chunk of context from another file (llama.cpp `input_extra`)."""

    filename: StrictStr = ""
    text: StrictStr = ""


class LlamaRequest(_Request):
    """Fields llama.cpp's `/completion` and `/infill` share."""

    prompt: Union[StrictStr, list[StrictInt]] = ""
    n_predict: Optional[StrictInt] = None  # -1 or absent: the server's default
    temperature: Optional[Annotated[Number, Field(ge=0)]] = None
    top_k: Optional[StrictInt] = None  # <= 0: off
    top_p: Optional[Annotated[Number, Field(ge=0, le=1)]] = None  # 0 or 1: off
    repeat_penalty: Optional[Annotated[Number, Field(gt=0)]] = None
    seed: Optional[Annotated[StrictInt, Field(le=MAX_SEED)]] = None  # negative (llama.cpp sends -1): random
    stop: Optional[list[StrictStr]] = None
    stream: StrictBool = False
    cache_prompt: StrictBool = True
    t_max_predict_ms: Optional[StrictInt] = None  # <= 0: no limit
    n_indent: StrictInt = 0  # > 0: a later line indented by fewer spaces or tabs ends the completion
    ignore_eos: StrictBool = False  # make exactly n_predict tokens (stop strings still end it): benchmarks
    response_fields: Optional[list[StrictStr]] = None


class InfillRequest(LlamaRequest):
    """llama.cpp `POST /infill` as llama.vim and llama.vscode send it."""

    input_prefix: StrictStr = ""
    input_suffix: StrictStr = ""
    input_extra: Annotated[list[ExtraChunk], Field(max_length=MAX_EXTRA_CHUNKS)] = []
    prompt: StrictStr = ""  # the text of the cursor line before the cursor: it continues input_prefix


class TgiParameters(_Request):
    """The `parameters` of a TGI `/generate` request, with TGI's bounds."""

    max_new_tokens: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    temperature: Optional[Annotated[Number, Field(gt=0)]] = None
    top_p: Optional[Annotated[Number, Field(gt=0, le=1)]] = None
    top_k: Optional[Annotated[StrictInt, Field(gt=0)]] = None
    do_sample: StrictBool = False
    stop: Optional[list[StrictStr]] = None
    return_full_text: Optional[StrictBool] = None
    seed: Optional[Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]] = None
    repetition_penalty: Optional[Annotated[Number, Field(gt=0)]] = None


class TgiRequest(_Body):
    """Hugging Face text-generation-inference `POST /generate`, as llm-ls / llm.nvim / llm-vscode send it."""

    inputs: Annotated[StrictStr, Field(min_length=1)]
    parameters: TgiParameters = TgiParameters()
