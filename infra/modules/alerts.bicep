// Alerts on what needs a person: an event Event Grid dead-lettered, a message in a poison queue, a failed
// job, and a reconciliation that has not run for 26 hours. Each fires to the action groups given (none:
// the alert still shows in the portal, and `certsync doctor --deployment` names it).
//
// Where each signal comes from:
// - dead letters: the Key Vault system topic's DeadLetteredCount metric (Event Grid writes the event to
//   the dead-letter container at the same time);
// - poison: the Functions host's "moving message to queue '<queue>-poison'" trace, and the audit rows
//   certsync writes when it poisons a job or a notification (kinds job-poisoned, notification-failed);
// - failed jobs: Automation's JobLogs (diagnostic setting in automation.bicep) with a Failed, Suspended or
//   Stopped result, and audit rows job-rejected and discovery-failed;
// - the heartbeat: the daily reconciliation logs one summary line with `certsync.run_id`
//   (functions/reconcile.py); none in 26 hours means the timer, the app or its storage is broken.
// Audit rows reach the workspace through the `certsync.audit` logger (shared/adapters/azure/tables.py).

param location string
param tags object = {}

@description('Log Analytics workspace that holds AppTraces and Automation JobLogs.')
param workspaceId string

@description('Resource id of the Key Vault\'s Event Grid system topic.')
param systemTopicId string

@description('Resource ids of existing action groups to notify, comma-separated; empty for none.')
param actionGroupIds string = ''

@description('An e-mail address for a new action group; empty to create none.')
param alertEmail string = ''

var givenActionGroups = filter(map(split(actionGroupIds, ','), id => trim(id)), id => !empty(id))
var actionGroups = empty(alertEmail) ? givenActionGroups : concat(givenActionGroups, [emailGroup.id])

resource emailGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-certsync'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'certsync'
    enabled: true
    emailReceivers: [
      {
        name: 'certsync-admins'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// An event Event Grid gave up on (30 attempts in 24 hours, or a 4xx): the renewal it announced is only
// picked up by the next reconciliation. infra/README.md says how to read and replay the blob.
resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'certsync-dead-lettered-events'
  location: 'global'
  tags: tags
  properties: {
    description: 'certsync: a Key Vault certificate event was dead-lettered (see the certsync-deadletter container)'
    severity: 1
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'dead-lettered'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    actions: [for id in actionGroups: { actionGroupId: id }]
  }
}

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'certsync-poison-messages'
  location: location
  tags: tags
  properties: {
    displayName: 'certsync: a message went to a poison queue'
    description: 'A remediation, tracking or notification message was given up on; certsync doctor --deployment and the audit trail say which.'
    severity: 1
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    scopes: [
      workspaceId
    ]
    criteria: {
      allOf: [
        {
          query: 'AppTraces | where Message has "-poison" or tostring(Properties["certsync.audit.kind"]) in ("job-poisoned", "notification-failed")'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: actionGroups
    }
  }
}

resource jobFailedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'certsync-job-failed'
  location: location
  tags: tags
  properties: {
    displayName: 'certsync: a remediation or discovery job failed'
    description: 'An Automation job on the hybrid worker group failed, was suspended or stopped, or Automation refused to start it.'
    severity: 1
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    scopes: [
      workspaceId
    ]
    criteria: {
      allOf: [
        {
          query: 'union (AzureDiagnostics | where ResourceProvider == "MICROSOFT.AUTOMATION" and Category == "JobLogs" and ResultType in ("Failed", "Suspended", "Stopped")), (AppTraces | where tostring(Properties["certsync.audit.kind"]) in ("job-rejected", "discovery-failed") or (tostring(Properties["certsync.audit.kind"]) == "job-result" and tostring(Properties["certsync.audit.status"]) != "succeeded"))'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: actionGroups
    }
  }
}

// The heartbeat: the query looks back 26 hours itself (a daily schedule plus two hours of slack), so the
// rule's window only has to be at least that long.
resource reconciliationHeartbeatAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'certsync-reconciliation-missing'
  location: location
  tags: tags
  properties: {
    displayName: 'certsync: the reconciliation has not run in 26 hours'
    description: 'No reconciliation summary (certsync.run_id) in 26 hours: check the Function App, its timer (RECONCILE_SCHEDULE) and its storage.'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    scopes: [
      workspaceId
    ]
    criteria: {
      allOf: [
        {
          query: 'AppTraces | where TimeGenerated > ago(26h) | where isnotempty(tostring(Properties["certsync.run_id"])) | summarize runs = count()'
          timeAggregation: 'Total'
          metricMeasureColumn: 'runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

output alertNames array = [
  deadLetterAlert.name
  poisonAlert.name
  jobFailedAlert.name
  reconciliationHeartbeatAlert.name
]
