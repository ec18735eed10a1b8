from firmware_bridge.cli import app

app(prog_name="firmware_bridge")
