"""Lifecycle actions from a terminal: each ACTION calls one service on the task and its descendants."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tasks_app import cli
from tasks_app.models import Priority, Signature
from tasks_app.services import deletion, lifecycle, swarms, tree
from tasks_app.services.errors import InvalidTransition, SpecError

ACTIONS = (
    "start",
    "pause",
    "resume",
    "interrupt",
    "retry",
    "skip",
    "rerun",
    "restore",
    "delete",
    "cancel",
    "approve",
    "reject",
    "close",
    "priority",
)


class Command(BaseCommand):
    help = """Act on a task and everything below it:
  start      start a stored task (submitted with run: false)
  pause      hold queued work, stop running work at its next checkpoint
  resume     continue paused or interrupted work from its checkpoint
  interrupt  stop hard: kill running work, drop queued jobs (no callbacks fire)
  retry      run a failed or interrupted task again from its failed step (a container: its failed
             members); --from-start redoes completed steps, --kwargs JSON replaces its arguments
  skip       go on past a failure: a task's failed step, or a failed member of a chain or graph
             (its container goes on as if it had returned --result JSON, default null)
  rerun      run a finished task again from scratch
  delete     mark for deletion (restorable for --ttl seconds; running work continues)
  restore    undo a delete within its window
  cancel     stop and delete the whole tree for good; needs --yes
  approve    / reject a pending approval (--comment)
  close      close a swarm: it completes when its members are done
  priority   change the priority (--priority high|medium|low)
Exit status: 0 done, 1 bad input or refused cancel, 2 the task's status forbids the action."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("id", type=int, help="A task id.")
        parser.add_argument("--ttl", type=int, default=None, help="delete: seconds it stays restorable.")
        parser.add_argument("--yes", action="store_true", help="cancel: confirm deleting the whole tree.")
        parser.add_argument("--comment", default="", help="approve / reject: a comment for the record.")
        parser.add_argument("--priority", choices=Priority.values, help="priority: the new priority.")
        parser.add_argument("--kwargs", default=None, help="retry: new arguments of the task, a JSON object.")
        parser.add_argument("--from-start", action="store_true", help="retry: redo the completed steps too.")
        parser.add_argument("--result", default=None, help="skip: the member's substitute result, as JSON.")

    def handle(self, *args, **options):
        action = options["action"]
        sig = cli.get_signature(options["id"])
        try:
            message = getattr(self, f"do_{action}")(sig, options, cli.actor())
        except InvalidTransition as exc:
            text = str(exc) if str(exc).startswith("cannot") else f"cannot {action} #{sig.pk}: {exc}"
            raise CommandError(text, returncode=2) from exc
        except SpecError as exc:
            raise CommandError(f"cannot {action} #{sig.pk}:\n{cli.field_errors(exc.errors)}") from exc
        self.stdout.write(message)

    # One method per action; each calls one service and says what happened -------------------

    def do_start(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("started", lifecycle.start(sig, actor=actor))

    def do_pause(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("paused", lifecycle.pause(sig, actor=actor))

    def do_resume(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("resumed", lifecycle.resume(sig, actor=actor))

    def do_interrupt(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("interrupted", lifecycle.interrupt(sig, actor=actor))

    def do_retry(self, sig: Signature, options: dict, actor: str) -> str:
        kwargs = None if options["kwargs"] is None else cli.parse_json(options["kwargs"], "--kwargs")
        sig = lifecycle.retry(sig, kwargs=kwargs, from_start=options["from_start"], actor=actor)
        return _done("retrying" + (" from the start" if options["from_start"] else ""), sig)

    def do_skip(self, sig: Signature, options: dict, actor: str) -> str:
        result = None if options["result"] is None else cli.parse_json(options["result"], "--result")
        return _done("skipped the failure of", lifecycle.skip(sig, result=result, actor=actor))

    def do_rerun(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("rerunning", lifecycle.rerun(sig, actor=actor))

    def do_restore(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("restored", deletion.restore(sig, actor=actor))

    def do_delete(self, sig: Signature, options: dict, actor: str) -> str:
        sig = deletion.delete(sig, ttl=options["ttl"], actor=actor)
        return (
            f"marked #{sig.pk} for deletion; restorable until {cli.local_time(sig.delete_after)} "
            f"(manage.py control restore {sig.pk})"
        )

    def do_cancel(self, sig: Signature, options: dict, actor: str) -> str:
        if not options["yes"]:
            below = len(tree.descendant_ids(sig)) - 1
            what = f"#{sig.pk} {sig.title!r}" + (f" and the {below} signatures below it" if below else "")
            raise CommandError(
                f"cancel stops and deletes {what}, with their runs, steps and logs, for good; "
                "run again with --yes to confirm"
            )
        audit = lifecycle.cancel(sig, confirm=True, actor=actor)
        deleted = ", ".join(f"{n} {what}" for what, n in audit.data.get("deleted", {}).items() if n)
        return f"cancelled #{sig.pk}; deleted {deleted or 'nothing else'}"

    def do_approve(self, sig: Signature, options: dict, actor: str) -> str:
        return self.decide(sig, True, options["comment"], actor)

    def do_reject(self, sig: Signature, options: dict, actor: str) -> str:
        return self.decide(sig, False, options["comment"], actor)

    def decide(self, sig: Signature, approve: bool, comment: str, actor: str) -> str:
        from tasks_app.services import approvals

        approvals.decide(sig, approve=approve, comment=comment, actor=actor)
        sig.refresh_from_db()
        return _done("approved" if approve else "rejected", sig)

    def do_close(self, sig: Signature, options: dict, actor: str) -> str:
        return _done("closed", swarms.close(sig, actor=actor))

    def do_priority(self, sig: Signature, options: dict, actor: str) -> str:
        if not options["priority"]:
            raise CommandError("priority needs --priority high|medium|low")
        sig = lifecycle.set_priority(sig, options["priority"], actor=actor)
        return f"#{sig.pk} priority is now {sig.priority}"


def _done(verb: str, sig: Signature) -> str:
    return f"{verb} #{sig.pk} {sig.title} (now {cli.status_label(sig.status)})"
