"""A hostile Python plugin for the sandbox's tests: with {"mode": "loop"} it never returns,
with {"mode": "bomb"} it allocates until the host's memory limit stops it."""

import wit_world

import phiwatch_plugin as pw

MODE = ["none"]


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return pw.description("hostile-python", "0.1.0", ["hostile"])

    def configure(self, config):
        MODE[0] = pw.settings(config, {"mode": "none"})["mode"]

    def detect(self, batch):
        if MODE[0] == "loop":
            n = 0
            while True:
                n += 1
        if MODE[0] == "bomb":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        return []
