"""A small ctypes layer over libespeak-ng's C API (``speak_lib.h``), as the wheel ships it.

``espeakng-loader`` packages ``libespeak-ng.so`` and its ``espeak-ng-data``; no Python binding
of the synthesis API is maintained, and the calls needed are few: initialise once per process
in synchronous mode, set a callback that receives the samples, pick a voice and a rate, synth.

The library keeps global state and is not re-entrant, so every call goes through one
process-wide lock: one synthesis at a time per process. ``speak`` blocks (run it off the event
loop); the callback runs on the calling thread as audio is produced, and returning ``False``
from ``on_audio`` aborts the synthesis (the client hung up).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE = 1
EE_OK = 0
BUFFER_MS = 100  # audio per callback

Samples = npt.NDArray[np.int16]
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(Exception):
    """libespeak-ng could not be loaded, initialised, or refused a call."""


class _VoiceSelect(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def wheel_paths() -> tuple[str, str]:
    """The library and data directory shipped by ``espeakng-loader`` (ImportError if absent)."""
    import espeakng_loader

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@dataclass
class _Loaded:
    lib: ctypes.CDLL
    sample_rate: int
    callback: object  # keeps the ctypes thunk alive for the life of the process
    paths: tuple[str, str]


_lock = threading.Lock()
_loaded: _Loaded | None = None
_on_audio: Callable[[Samples], bool] | None = None
_running = 0  # syntheses in progress in this process (0 or 1): tests watch it


def _dispatch(wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
    if not wav or count <= 0 or _on_audio is None:
        return 0
    samples = np.ctypeslib.as_array(wav, shape=(count,)).copy()
    return 0 if _on_audio(samples) else 1  # 1 aborts espeak_Synth


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSelect)]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    for name in ("espeak_SetVoiceByName", "espeak_SetVoiceByProperties", "espeak_SetParameter",
                 "espeak_Synth"):  # fmt: skip
        getattr(lib, name).restype = ctypes.c_int


def initialize(library: str = "", data: str = "") -> int:
    """Load and initialise libespeak-ng once per process; return its sample rate.

    Later calls return the first initialisation's rate: the library is process-global.
    """
    global _loaded
    if not library or not data:
        wheel_library, wheel_data = wheel_paths()
        library, data = library or wheel_library, data or wheel_data
    if not Path(data).is_dir():
        raise EspeakError(f"espeak-ng data directory {Path(data).name!r} not found")
    with _lock:
        if _loaded is None:
            try:
                lib = ctypes.CDLL(library)
            except OSError as exc:
                raise EspeakError(f"cannot load {library!r}: {exc}") from None
            _declare(lib)
            rate = lib.espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data.encode(), INITIALIZE_DONT_EXIT
            )
            if rate <= 0:
                raise EspeakError(f"espeak_Initialize failed ({rate})")
            callback = _CALLBACK(_dispatch)
            lib.espeak_SetSynthCallback(callback)
            _loaded = _Loaded(lib, rate, callback, (library, data))
        elif _loaded.paths != (library, data):
            raise EspeakError("libespeak-ng is already loaded in this process from other paths")
        return _loaded.sample_rate


def _set_voice(lib: ctypes.CDLL, voice: str) -> None:
    # By file name first ("en-us+f4"), then by language as the espeak-ng program does
    # ("en-gb+f2": the voice file is called "en"; the variant after "+" is kept).
    if lib.espeak_SetVoiceByName(voice.encode()) == EE_OK:
        return
    select = _VoiceSelect(languages=voice.encode())
    if lib.espeak_SetVoiceByProperties(ctypes.byref(select)) != EE_OK:
        raise EspeakError(f"espeak-ng has no voice {voice!r}")


def check_voice(voice: str) -> None:
    """Raise ``EspeakError`` unless ``voice`` can be selected (initialise first)."""
    with _lock:
        if _loaded is None:
            raise EspeakError("libespeak-ng is not initialised")
        _set_voice(_loaded.lib, voice)


def speak(
    text: str, voice: str, words_per_minute: int, on_audio: Callable[[Samples], bool]
) -> None:
    """Synthesise ``text``, handing each block of samples to ``on_audio`` as it is produced.

    Blocks until the text is spoken or ``on_audio`` returns False; waits for the process-wide
    lock first, so concurrent callers take turns.
    """
    global _on_audio, _running
    with _lock:
        if _loaded is None:
            raise EspeakError("libespeak-ng is not initialised")
        lib = _loaded.lib
        _set_voice(lib, voice)
        if (code := lib.espeak_SetParameter(PARAM_RATE, words_per_minute, 0)) != EE_OK:
            raise EspeakError(f"espeak_SetParameter(rate={words_per_minute}) failed ({code})")
        data = text.encode() + b"\0"
        _on_audio, _running = on_audio, _running + 1
        try:
            code = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        finally:
            _on_audio, _running = None, _running - 1
        if code != EE_OK:
            raise EspeakError(f"espeak_Synth failed ({code})")


def running() -> int:
    """Syntheses in progress in this process (tests check a hang-up stops them)."""
    return _running
