"""Stand-in `cupy.cuda.runtime.getDeviceCount`."""


class runtime:  # noqa: N801 - cupy's own spelling
    @staticmethod
    def getDeviceCount():  # noqa: N802
        import cupy

        return cupy.DEVICES
