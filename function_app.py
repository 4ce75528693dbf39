"""The Azure Functions app: creates the FunctionApp and registers the blueprints in functions/."""

import azure.functions as func

from functions.blocks import bp as blocks_bp
from functions.discovery import bp as discovery_bp
from functions.names import bp as names_bp
from functions.pipeline import bp as pipeline_bp
from functions.reconcile import bp as reconcile_bp
from functions.remediation import bp as remediation_bp
from functions.status import bp as status_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(blocks_bp)
app.register_functions(discovery_bp)
app.register_functions(names_bp)
app.register_functions(pipeline_bp)
app.register_functions(reconcile_bp)
app.register_functions(remediation_bp)
app.register_functions(status_bp)
