# Sourced by the azd hooks in this directory (`. "$(dirname "$0")/common.sh"`), not run on its own.
# Sets `hook` (the running hook's name, for messages) and `root` (the project root).

hook=$(basename "$0" .sh)
root=$(cd "$(dirname "$0")/../.." && pwd)

# require "AZD COMMANDS" NAME...: exit 2 naming the first NAME that is unset or empty. azd sets them
# (main.bicep's outputs), so the fix is to run the hook through the azd commands given.
require() {
    via=$1
    shift
    for name in "$@"; do
        eval "value=\${$name:-}"
        if [ -z "$value" ]; then
            echo "certsync $hook: $name is not set; run this through azd ($via)" >&2
            exit 2
        fi
    done
}
