"""Operator commands to a trading node: pause, resume, flatten, reset_breaker and stop.

Commands arrive through the state store (from the CLI, the dashboard or Telegram); the node applies the pending
ones before each batch and acknowledges each with what it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.node import Node


def apply_commands(node: Node) -> None:
    """Apply and acknowledge the pending commands (``sleeve`` None: every sleeve, and the portfolio)."""
    for command in node.store.pending_commands():
        keys = [key for key in node.stepper.engines if command.sleeve in (None, key)]
        targets = [node.stepper.engines[key] for key in keys]
        if command.command in ("pause", "resume"):  # the operator decides now: fresh data no longer resumes them
            node._stale_paused.difference_update(keys)
        if command.command == "pause":
            for engine in targets:
                engine.ledger.pause()
            node.store.set_status("paused", f"paused by {command.source}", mode=node.mode)
            result = "paused: no new entries"
        elif command.command == "resume":
            for engine in targets:
                engine.ledger.resume()
            node.store.set_status("running", f"resumed by {command.source}", mode=node.mode)
            result = "resumed"
        elif command.command == "flatten":
            for engine in targets:
                engine.ledger.flatten()
            result = "flattening at the next fill"
        elif command.command == "reset_breaker":
            for engine in targets:
                engine.ledger.reset_breakers()
            if command.sleeve is None:
                node.stepper.tripped = False
                node.stepper.peak = node.stepper.equity
            result = "breakers reset"
        else:
            node._stop_requested = f"stop command from {command.source}"
            result = "stopping"
        if command.id is not None:
            node.store.acknowledge(command.id, result, node.clock.now().to_pydatetime())
        node.summary.commands += 1
        node._emit("command", f"command {command.command} from {command.source}: {result}")
