"""Offline FHIR R4 validation for tests: HAPI FHIR 8.6.1 in one long-lived JVM.

The Java side is tests/fhir-validator (one source file), built with Maven into a single jar on
first use. It checks resources against the base R4 specification only, with no terminology
server: codes from systems it does not carry (LOINC, SNOMED CT, French urn:oid systems) are
warnings, never errors, unless a required binding rejects them.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, cast

from dmp_stack.infra import say

PROJECT = Path(__file__).resolve().parents[3] / "tests" / "fhir-validator"
JAR = PROJECT / "target" / "fhir-validator.jar"


class FhirValidatorError(RuntimeError):
    """The validator could not be built or run; the message says why and what to do."""


class Issue(TypedDict):
    severity: str  # "error" or "fatal"
    location: str  # a FHIRPath, e.g. "DocumentReference.content"
    message: str


class Report(TypedDict):
    errors: list[Issue]
    warnings: int


def _needs(tool: str, why: str) -> str:
    found = shutil.which(tool)
    if found is None:
        debian = "apt-get install openjdk-17-jdk-headless maven"
        raise FhirValidatorError(f"`{tool}` is not on PATH: {why} (Debian: {debian})")
    return found


def validator_jar() -> Path:
    """The validator's jar, built by Maven (cache: ~/.m2) if missing or older than its sources."""
    sources = [PROJECT / "pom.xml", *(p for p in (PROJECT / "src").rglob("*") if p.is_file())]
    newest = max(p.stat().st_mtime for p in sources)
    if JAR.exists() and JAR.stat().st_mtime >= newest:
        return JAR
    mvn = _needs("mvn", "Maven builds the FHIR validator")
    (PROJECT / "target").mkdir(exist_ok=True)
    with open(PROJECT / "target" / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then find it built
        if JAR.exists() and JAR.stat().st_mtime >= newest:
            return JAR
        say(f"building the FHIR validator ({PROJECT}, mvn package)")
        started = time.monotonic()
        built = subprocess.run(
            [mvn, "-B", "-q", "package", "-DskipTests"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0 or not JAR.exists():
            output = (built.stdout + built.stderr)[-4000:]
            raise FhirValidatorError(f"mvn package failed in {PROJECT}:\n{output}")
        say(f"built {JAR} in {time.monotonic() - started:.0f}s")
    return JAR


class FhirValidator:
    """One `java -jar` validator process: a JSON line in, a JSON line out, one call at a time."""

    def __init__(self, jar: Path | None = None, java_options: tuple[str, ...] = ()) -> None:
        self._jar = jar
        self._java_options = java_options
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> FhirValidator:
        """Builds the jar if needed, starts the JVM and waits until it has validated once."""
        with self._lock:
            if self._process is not None:
                return self
            java = _needs("java", "a JDK 17 runs the FHIR validator")
            jar = self._jar or validator_jar()
            self._process = subprocess.Popen(
                [java, *self._java_options, "-jar", str(jar)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        self.report({"resourceType": "Patient"})  # loads the base definitions once
        return self

    def report(self, resource: dict[str, Any]) -> Report:
        """The errors (error and fatal) of one resource and its count of warnings."""
        line = json.dumps(resource, ensure_ascii=False)
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.stdout is None:
                raise FhirValidatorError("the FHIR validator is not started (start() or with)")
            try:
                process.stdin.write(line + "\n")
                process.stdin.flush()
                answer = process.stdout.readline()
            except BrokenPipeError:
                answer = ""
            if not answer:
                code = process.wait(timeout=10)
                raise FhirValidatorError(f"the FHIR validator exited with code {code}")
        return cast(Report, json.loads(answer))

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        """The errors of one resource: an empty list when it is valid."""
        return self.report(resource)["errors"]

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # end of input: the JVM exits by itself
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> FhirValidator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
