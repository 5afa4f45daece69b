"""Off-screen rendering without a display (DESIGN.md section 7).

pyvista draws through VTK's OpenGL render window. VTK's PyPI wheel picks the window class at
run time: X11 when there is a display, else EGL (Mesa's llvmpipe or a GPU driver), and OSMesa
(pure software, the `libosmesa6` package) only when asked through the environment variable
VTK_DEFAULT_OPENGL_WINDOW. `ensure_offscreen()` makes that choice for the project before any
window exists:

    display set            -> VTK's default (X11)
    no display, EGL works  -> vtkEGLRenderWindow (set explicitly: saves VTK a failed X attempt
                              and its "bad X server connection" warning)
    no display, no EGL,
      libOSMesa found      -> vtkOSOpenGLRenderWindow
    none of these          -> RenderingUnavailable, saying what to install

A VTK_DEFAULT_OPENGL_WINDOW the user set is always kept. The decision itself is the pure
function `choose_opengl_window`, so it can be tested without any of these libraries; the
probes (`egl_works`, `osmesa_found`) are cheap (a library lookup and one EGL initialisation,
about 30 ms) and `ensure_offscreen` runs them once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from simulator.errors import SimulatorError

OPENGL_WINDOW_VARIABLE = "VTK_DEFAULT_OPENGL_WINDOW"
EGL_WINDOW = "vtkEGLRenderWindow"
OSMESA_WINDOW = "vtkOSOpenGLRenderWindow"

INSTALL_HINT = (
    "3-D rendering needs an OpenGL context, and none is available here: there is no display "
    "(DISPLAY/WAYLAND_DISPLAY unset), EGL could not be initialised, and the OSMesa software "
    "renderer is not installed. On Debian/Ubuntu run `apt-get install libosmesa6` (the "
    "simulator then selects OSMesa by itself); on Fedora/RHEL install `mesa-libOSMesa`. "
    "Alternatively run with a display (or under `xvfb-run`), or install Mesa's EGL "
    "(`apt-get install libegl1 libegl-mesa0`) or a GPU driver that provides EGL. "
    "Runs are not affected: rerender later with `sim render RUN_DIR`."
)


class RenderingUnavailable(SimulatorError):
    """No OpenGL context can be made here; the message says what to install."""


def choose_opengl_window(display: str | None, egl_available: bool, osmesa_available: bool,
                         requested: str | None = None, platform: str = "linux") -> str | None:
    """The VTK render-window class to request, or None for VTK's own default.

    display: the DISPLAY (or WAYLAND_DISPLAY) value, None/"" when unset; egl_available: EGL
    can be initialised; osmesa_available: libOSMesa can be loaded; requested: a
    VTK_DEFAULT_OPENGL_WINDOW already set by the user (kept as is); platform: sys.platform
    (only Linux-like systems go without a window system).
    Raises RenderingUnavailable when nothing can render.
    """
    if requested:
        return requested
    if not platform.startswith(("linux", "freebsd")) or display:
        return None
    if egl_available:
        return EGL_WINDOW
    if osmesa_available:
        return OSMESA_WINDOW
    raise RenderingUnavailable(INSTALL_HINT)


def osmesa_found() -> bool:
    """Whether the OSMesa library is installed (VTK loads it by this name at run time)."""
    return ctypes.util.find_library("OSMesa") is not None


def egl_works() -> bool:
    """Whether EGL initialises on some device (what VTK's EGL window does), without a display."""
    name = ctypes.util.find_library("EGL")
    if name is None:
        return False
    try:
        egl = ctypes.CDLL(name)
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        egl.eglTerminate.argtypes = [ctypes.c_void_p]
        query_address = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
        display_address = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
        if not query_address or not display_address:
            return False
        query_devices = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_int))(query_address)
        platform_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p,
                                            ctypes.c_void_p)(display_address)
        devices, count = (ctypes.c_void_p * 16)(), ctypes.c_int(0)
        if not query_devices(16, devices, ctypes.byref(count)):
            return False
        egl_platform_device = 0x313F  # EGL_PLATFORM_DEVICE_EXT, the platform VTK uses headless
        for index in range(count.value):
            display = platform_display(egl_platform_device, devices[index], None)
            major, minor = ctypes.c_int(), ctypes.c_int()
            if display and egl.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)):
                egl.eglTerminate(display)
                return True
    except (OSError, AttributeError):
        return False
    return False


_chosen: list[str | None] = []  # memo of ensure_offscreen's choice (a list: set once per process)


def ensure_offscreen() -> str | None:
    """Prepare pyvista for off-screen rendering; call before the first Plotter.

    Returns the render-window class requested (None: VTK's default). Raises
    RenderingUnavailable (a SimulatorError) when no OpenGL context can work here.
    """
    if not _chosen:
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        requested = os.environ.get(OPENGL_WINDOW_VARIABLE)
        needs_probe = not requested and not display and sys.platform.startswith(("linux", "freebsd"))
        egl = egl_works() if needs_probe else False
        osmesa = osmesa_found() if needs_probe and not egl else False
        window = choose_opengl_window(display, egl, osmesa, requested, sys.platform)
        if window and not requested:
            # VTK reads the variable each time it creates a render window, so setting it
            # after `import vtk` but before the first Plotter is enough.
            os.environ[OPENGL_WINDOW_VARIABLE] = window
        _chosen.append(window)
    import pyvista  # deferred: a heavy library only drawing needs

    pyvista.OFF_SCREEN = True
    return _chosen[0]
