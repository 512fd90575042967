"""The interface, frozen: a change to a command's flags must change this list too, so that it
is a deliberate one (as torchtitan does). `lmcli train`'s model and training flags come from the
config dataclasses; each is also a config-file key."""

from __future__ import annotations

from typing import Any

import pytest

from lmcli.cli.app import COMMANDS, _LazyCommands
from lmcli.presets import KNOWN_KEYS

FLAGS = {
    "tokenize": "--bpe-train-mb --data-dir --doc-separator --drop-unknown --exact --force --json "
    "--out --threads --tokenizer --tokenizer-from --val-files --val-fraction --vocab-size",
    "train": "--batch-size --beta1 --beta2 --bias --compile --config --context --decay-fraction "
    "--device --dropout "
    "--dtype --embedding --eval-every --eval-interval --grad-accum --grad-clip --heads --json "
    "--kv-heads --layers --log-every --lr --max-steps --max-time --min-lr-ratio --mlp --model "
    "--muon-lr --norm --norm-placement --optimizer --out --pos --preset --processes --quiet "
    "--resume --seed --threads --tie --tokenizer --vocab-size --warmup --weight-decay --width "
    "--window --window-pattern --val-files --doc-separator --init-from --drop-unknown "
    "--sample-every --seq-warmup --embedding-lr --muon-scale",
    "sample": "--context-window --device --drop-unknown --json --max-new-tokens --num-samples "
    "--prompt --prompt-file --seed --stream --temperature --threads --top-k --top-p --stop "
    "--stop-at-eot --repetition-penalty",
    "eval": "--batch-size --by-position --device --drop-unknown --json --split --threads",
    "runs": "--json --out --plot",
    "export": "--force --format --json --out --verify",
    "inspect": "--compare --drop-unknown --file --head --json --layer --out --query --seed "
    "--stages --temperature --top --top-k --top-p --vs",
    "compare-rnn": "--budget --device --eval-points --json --match --models --out --preset "
    "--prompt --quiet --rnn-layers --sample-tokens --seed --steps --threads",
    "bench": "--corpus --device --json --preset --quick --quiet --repeats --sample-tokens --suite",
}


def flags_of(command: Any) -> set[str]:
    return {
        name
        for param in command.params
        if param.param_type_name == "option"
        for name in param.opts
        if name.startswith("--") and name != "--help"
    }


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_flags_of_each_command(name: str) -> None:
    command = _LazyCommands()[name]
    assert flags_of(command) == set(FLAGS[name].split()), name


def test_every_train_setting_is_a_flag_and_a_config_key() -> None:
    train = flags_of(_LazyCommands()["train"])
    invocation = {
        "--config",
        "--out",
        "--resume",
        "--init-from",
        "--drop-unknown",
        "--json",
        "--processes",
        "--quiet",
    }
    assert {flag.removeprefix("--") for flag in train - invocation} == KNOWN_KEYS
