from envstore.common.service_runtime import run_service
from envstore.registry.app import serve

run_service("registry", serve)
