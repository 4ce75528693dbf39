# Dot-sourced by the azd PowerShell hooks in this directory (`. "$PSScriptRoot/common.ps1"`), not run on its
# own; the twin of common.sh. Sets $hook (the running hook's name, for messages) and $root (the project
# root), and stops on the first failing command. Windows PowerShell 5.1 and PowerShell 7.
Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$hook = [System.IO.Path]::GetFileNameWithoutExtension($MyInvocation.PSCommandPath)
$root = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path

# Require 'AZD COMMANDS' NAME...: exit 2 naming the first NAME that is unset or empty. azd sets them
# (main.bicep's outputs), so the fix is to run the hook through the azd commands given.
function Require {
    param([string] $Via, [string[]] $Names)
    foreach ($name in $Names) {
        $value = [Environment]::GetEnvironmentVariable($name)
        if ([string]::IsNullOrEmpty($value)) {
            [Console]::Error.WriteLine("certsync ${hook}: $name is not set; run this through azd ($Via)")
            exit 2
        }
    }
}

# Optional NAME [DEFAULT]: the variable's value, or DEFAULT when it is unset or empty.
function Optional {
    param([string] $Name, [string] $Default = '')
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrEmpty($value)) { return $Default }
    return $value
}

# Invoke-Az ARGS...: run the Azure CLI and stop with its exit code when it fails (5.1 does not stop on a
# native command's failure by itself).
function Invoke-Az {
    & az @args
    if ($LASTEXITCODE -ne 0) {
        [Console]::Error.WriteLine("certsync ${hook}: az $($args[0]) $($args[1]) failed (exit $LASTEXITCODE)")
        exit $LASTEXITCODE
    }
}
